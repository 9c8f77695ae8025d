"""Runs into environments and steps on behalf of roles, through the real server: each
cloud-region target's execution lands in the target's own pool (served by its own
polling agent, a separate process), max_parallelism bounds the executions, a target
without a pool falls back to the default pool (the built-in worker while it is empty),
and scoping, failures and bad input are what a user sees."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.agents import AgentProcess
from tests.e2e.server import ServerProcess
from tests.e2e.tasks_support import lines_of, log, project, step, wait_task
from tests.helpers import rid, wait_until

pytestmark = pytest.mark.e2e

BUILT_IN = "built-in worker"
# Prints what the script sees, then sleeps so that overlapping executions would overlap.
REPORT = 'echo "target=$SHOAL_TARGET_NAME roles=$SHOAL_TARGET_ROLES worker=$SHOAL_WORKER_NAME"; sleep 1'


@pytest.fixture(scope="module")
def server(sqlite_server: ServerProcess) -> ServerProcess:
    return sqlite_server


@pytest.fixture(scope="module")
def regions(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An environment with two cloud-region targets, "eu" and "us", role web, each with a
    pool of its own served by its own polling agent."""
    home = tmp_path_factory.mktemp("agents")
    made: list[AgentProcess] = []
    with server.client() as c:
        env = c.post("/api/environments", json={"name": rid("Production")}).json()
        out: dict[str, Any] = {"env": env, "targets": {}, "agents": {}}
        for region in ("eu", "us"):
            pool = c.post("/api/worker-pools", json={"name": rid(f"{region}-pool")}).json()
            name = rid(region)
            r = c.post("/api/targets", json={
                "name": name, "kind": "cloud_region", "roles": ["web"],
                "environment_ids": [env["id"]], "default_worker_pool_id": pool["id"],
            })
            assert r.status_code == 201, r.text
            agent = AgentProcess(server, home / region, rid(f"{region}-agent"), [pool["id"]])
            agent.register()
            agent.start()
            made.append(agent)
            out["targets"][region] = r.json()
            out["agents"][region] = agent
    try:
        yield out
    finally:
        for agent in made:
            agent.stop()


def _run(c: httpx.Client, steps: list[dict[str, Any]], environment: str | None) -> dict[str, Any]:
    p = project(c, rid("regional"), steps)
    body = {} if environment is None else {"environment": environment}
    r = c.post(f"/api/projects/{p['id']}/runs", json=body)
    assert r.status_code == 201, r.text
    return wait_task(c, r.json()["id"], timeout=60)


def _behalf(name: str = "deploy", **extra: Any) -> dict[str, Any]:
    return {"name": name, "action": "script", "syntax": "bash", "script_body": REPORT,
            "on_behalf_of_roles": ["web"], **extra}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_each_target_runs_on_its_own_pools_agent_one_at_a_time(
    server: ServerProcess, regions: dict[str, Any]
) -> None:
    eu, us = regions["targets"]["eu"], regions["targets"]["us"]
    with server.client() as c:
        done = _run(c, [_behalf(max_parallelism=1)], regions["env"]["name"])
        assert done["state"] == "success", done
        assert done["environment"] == regions["env"]["name"]
        deploy = step(done, "deploy")
        assert deploy["state"] == "success" and deploy["reason"] == "2 of 2 targets succeeded"
        by_target = {x["target_name"]: x for x in deploy["executions"]}
        assert set(by_target) == {eu["name"], us["name"]}
        for region, target in (("eu", eu), ("us", us)):
            execution = by_target[target["name"]]
            agent = regions["agents"][region]
            assert (execution["state"], execution["exit_code"]) == ("success", 0)
            assert (execution["worker_id"], execution["worker_name"]) == (agent.worker_id, agent.name)
            assert execution["target_id"] == target["id"]
            # Each execution has its own section of the log, with what its script saw.
            section = f"deploy [{target['name']}]"
            assert lines_of(log(c, done["id"]), section) == [
                f"target={target['name']} roles=web worker={agent.name}"
            ]
        # max_parallelism 1: the second started only after the first finished.
        first, second = sorted(by_target.values(), key=lambda x: x["started"])
        assert _at(second["started"]) >= _at(first["finished"])

        # The target lists the run that used it.
        seen = c.get(f"/api/targets/{eu['id']}").json()
        assert seen["runs_total"] >= 1
        assert seen["runs"][0]["task_id"] == done["id"]
        assert (seen["runs"][0]["step"], seen["runs"][0]["state"]) == ("deploy", "success")
        assert seen["runs"][0]["worker_name"] == regions["agents"]["eu"].name
        paged = c.get(f"/api/targets/{eu['id']}/runs", params={"take": 1}).json()
        assert paged["items"][0]["task_id"] == done["id"] and paged["total"] == seen["runs_total"]


def test_executions_overlap_when_parallelism_allows(
    server: ServerProcess, regions: dict[str, Any]
) -> None:
    with server.client() as c:
        done = _run(c, [_behalf(script_body="sleep 3")], regions["env"]["id"])
        assert done["state"] == "success", done
        a, b = step(done, "deploy")["executions"]
        # Both ran at once (default max_parallelism is 10), each on its own region's agent.
        assert _at(a["started"]) < _at(b["finished"]) and _at(b["started"]) < _at(a["finished"])
        assert a["worker_id"] != b["worker_id"]


def test_a_failing_target_fails_the_step_and_names_it(
    server: ServerProcess, regions: dict[str, Any]
) -> None:
    eu = regions["targets"]["eu"]
    body = f'[ "$SHOAL_TARGET_NAME" = "{eu["name"]}" ] && exit 3; exit 0'
    with server.client() as c:
        done = _run(c, [_behalf(script_body=body)], regions["env"]["name"])
        assert done["state"] == "failed"
        deploy = step(done, "deploy")
        assert deploy["state"] == "failed"
        assert deploy["reason"] == f"1 of 2 targets failed: {eu['name']}", (deploy, log(c, done["id"]))
        states = {x["target_name"]: (x["state"], x["exit_code"]) for x in deploy["executions"]}
        assert states[eu["name"]] == ("failed", 3)
        assert states[regions["targets"]["us"]["name"]] == ("success", 0)


def test_a_target_without_a_pool_falls_back_to_the_default_pool(server: ServerProcess) -> None:
    """The default pool has no workers on this server, so that is the built-in worker."""
    with server.client() as c:
        env = c.post("/api/environments", json={"name": rid("Staging")}).json()
        target = c.post("/api/targets", json={
            "name": rid("poolless"), "kind": "cloud_region", "roles": ["api"],
            "environment_ids": [env["id"]],
        }).json()
        done = _run(c, [_behalf(on_behalf_of_roles=["API"])], env["name"])
        assert done["state"] == "success", done
        (execution,) = step(done, "deploy")["executions"]
        assert (execution["target_name"], execution["worker_name"]) == (target["name"], BUILT_IN)
        section = f"deploy [{target['name']}]"
        assert lines_of(log(c, done["id"]), section) == [
            f"target={target['name']} roles=api worker={BUILT_IN}"
        ]


def test_no_matching_target_fails_or_skips_as_the_step_says(
    server: ServerProcess, regions: dict[str, Any]
) -> None:
    with server.client() as c:
        empty = c.post("/api/environments", json={"name": rid("Empty")}).json()
        done = _run(c, [_behalf(on_behalf_of_roles=["web", "db"])], empty["name"])
        assert done["state"] == "failed"
        deploy = step(done, "deploy")
        assert deploy["reason"] == (
            f"no enabled deployment target in environment {empty['name']!r} has any of the "
            "roles 'web', 'db'"
        )
        assert deploy["executions"] == []
        assert deploy["reason"] in log(c, done["id"])

        skipped = _run(c, [_behalf(skip_if_no_targets=True), {
            "name": "after", "action": "script", "syntax": "bash", "script_body": "echo after",
        }], empty["name"])
        assert skipped["state"] == "success"
        assert step(skipped, "deploy")["state"] == "skipped"
        assert step(skipped, "after")["state"] == "success"

        # A disabled target is not run for.
        eu = regions["targets"]["eu"]
        only = c.post("/api/environments", json={"name": rid("Solo")}).json()
        c.patch(f"/api/targets/{eu['id']}", json={"environment_ids": [regions["env"]["id"], only["id"]]})
        try:
            c.patch(f"/api/targets/{eu['id']}", json={"is_disabled": True})
            assert _run(c, [_behalf()], only["name"])["state"] == "failed"
        finally:
            c.patch(f"/api/targets/{eu['id']}", json={"is_disabled": False,
                                                       "environment_ids": [regions["env"]["id"]]})

        # A run into no environment has no targets to run for.
        none = _run(c, [_behalf()], None)
        assert none["state"] == "failed"
        assert "needs a run into an environment" in step(none, "deploy")["reason"]


def test_steps_scoped_to_environments_are_skipped_elsewhere(server: ServerProcess) -> None:
    with server.client() as c:
        prod = c.post("/api/environments", json={"name": rid("Prod")}).json()
        test = c.post("/api/environments", json={"name": rid("Test")}).json()
        steps = [
            {"name": "everywhere", "action": "script", "syntax": "bash", "script_body": "echo hi"},
            {"name": "prod only", "action": "script", "syntax": "bash", "script_body": "echo live",
             "environments": [prod["name"].upper()]},
        ]
        p = c.get(f"/api/projects/{project(c, rid('scoped'), steps)['id']}").json()
        # Stored under the environment's own name, whatever case the process used.
        assert p["steps"][1]["environments"] == [prod["name"]]
        into_test = c.post(f"/api/projects/{p['id']}/runs", json={"environment": test["name"]}).json()
        done = wait_task(c, into_test["id"])
        assert done["state"] == "success"
        skipped = step(done, "prod only")
        assert skipped["state"] == "skipped"
        assert skipped["reason"] == f"it runs only in {prod['name']!r}, not in {test['name']!r}"
        assert skipped["reason"] in log(c, done["id"])
        into_prod = c.post(f"/api/projects/{p['id']}/runs", json={"environment": prod["id"]}).json()
        done = wait_task(c, into_prod["id"])
        assert step(done, "prod only")["state"] == "success"
        assert lines_of(log(c, done["id"]), "prod only") == ["live"]

        # Renamed after the process was saved: the step follows it, in the project and in runs.
        renamed = rid("Production")
        assert c.patch(f"/api/environments/{prod['id']}", json={"name": renamed}).status_code == 200
        assert c.get(f"/api/projects/{p['id']}").json()["steps"][1]["environments"] == [renamed]
        into_renamed = c.post(f"/api/projects/{p['id']}/runs", json={"environment": renamed}).json()
        done = wait_task(c, into_renamed["id"])
        assert step(done, "prod only")["state"] == "success", step(done, "prod only")
        into_test = c.post(f"/api/projects/{p['id']}/runs", json={"environment": test["id"]}).json()
        assert step(wait_task(c, into_test["id"]), "prod only")["reason"] == (
            f"it runs only in {renamed!r}, not in {test['name']!r}")


def test_bad_input_changes_nothing(server: ServerProcess) -> None:
    with server.client() as c:
        p = project(c, rid("bad"), [_behalf()])
        before = c.get("/api/tasks", params={"project": p["id"]}).json()["total"]
        r = c.post(f"/api/projects/{p['id']}/runs", json={"environment": "Nowhere"})
        assert r.status_code == 422 and "environment 'Nowhere' does not exist" in r.text
        assert c.get("/api/tasks", params={"project": p["id"]}).json()["total"] == before

        bad_steps = {
            "max_parallelism": [_behalf(max_parallelism=0)],
            "environment 'Atlantis' does not exist": [_behalf(environments=["Atlantis"])],
            "only script steps run on behalf of roles": [
                {"name": "mail", "action": "email", "email": {"to": ["a@b.c"]},
                 "on_behalf_of_roles": ["web"]}],
            "skip_if_no_targets needs on_behalf_of_roles": [
                {"name": "x", "action": "script", "syntax": "bash", "script_body": "true",
                 "skip_if_no_targets": True}],
            "role name must not be empty": [_behalf(on_behalf_of_roles=[" "])],
        }
        for message, steps in bad_steps.items():
            r = c.put(f"/api/projects/{p['id']}/process", json={"steps": steps})
            assert r.status_code == 422 and message in r.text, (message, r.text)
        assert c.get(f"/api/projects/{p['id']}").json()["steps"][0]["on_behalf_of_roles"] == ["web"]


def test_unknown_target_runs_are_404(server: ServerProcess, tmp_path: Path) -> None:
    with server.client() as c:
        assert c.get("/api/targets/not-an-id/runs").status_code == 404


def test_cancelling_stops_the_running_execution_and_skips_the_rest(server: ServerProcess) -> None:
    with server.client() as c:
        env = c.post("/api/environments", json={"name": rid("Cancel")}).json()
        for name in ("c-1", "c-2"):
            c.post("/api/targets", json={"name": rid(name), "kind": "cloud_region",
                                         "roles": ["job"], "environment_ids": [env["id"]]})
        p = project(c, rid("cancel"), [_behalf(on_behalf_of_roles=["job"], max_parallelism=1,
                                               script_body="echo begun; sleep 60")])
        queued = c.post(f"/api/projects/{p['id']}/runs", json={"environment": env["name"]}).json()
        wait_until(lambda: "begun" in log(c, queued["id"]), 20, what="the first execution")
        assert c.post(f"/api/tasks/{queued['id']}/cancel").status_code in (200, 202)
        done = wait_task(c, queued["id"], timeout=30)
        deploy = step(done, "deploy")
        assert done["state"] == "cancelled"
        assert [x["state"] for x in deploy["executions"]] == ["cancelled", "skipped"]
