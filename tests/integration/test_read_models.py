"""What the query functions answer after a realistic run of commands, on each engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
import pytest

from domain.app import DEFAULT_POOL_NAME, Shoal
from domain.executions import TargetCandidate, plan_executions, targets_for
from domain.keys import Permission
from domain.plan import StepState, TaskState
from domain.policies import DEFAULT_POLICY_NAME
from domain.process import Action, Start, Step, Syntax
from domain.workers import CommsStyle, HealthStatus
from projections.audit import REDACTED, read_events
from projections.membership import members_of, running_steps
from projections.policies import list_policies
from projections.pools import get_pool, list_pools
from projections.projects import get_project
from projections.runner import ProjectionRunner
from projections.tasklogs import read_log
from projections.tasks import get_task, target_runs
from projections.workers import get_worker, list_workers
from tests.conftest import Backend
from tests.helpers import TESTER
from tests.integration.conftest import Views
from tests.sshworkers import ssh_for

pytestmark = pytest.mark.integration


@dataclass
class Scene:
    app: Shoal
    views: Views
    alpha: UUID
    beta: UUID
    default: UUID
    workers: dict[str, UUID]
    key_id: UUID
    installed_at: int


@pytest.fixture
def scene(app: Shoal, views: Views, new_runner: Callable[..., ProjectionRunner]) -> Scene:
    """Pools alpha (1 member) and beta (2), one worker moved, one renamed and disabled,
    one healthy, one deregistered from the default pool, a policy and a key."""
    installed_at = app.recorder.max_notification_id() or 0
    alpha = app.create_pool(name="Alpha", sort_order=1, actor=TESTER).aggregate.id
    beta = app.create_pool(name="beta", description="second", sort_order=2, actor=TESTER)
    beta_id = beta.aggregate.id
    default = app.default_pool_id()
    fast = app.create_policy(name="Fast checks", health_check_interval_s=60, actor=TESTER)

    def register(name: str, pools: tuple[UUID, ...], style: CommsStyle) -> UUID:
        return app.register_worker(
            name=name, pool_ids=pools, comms_style=style, ssh=ssh_for(style), actor=TESTER,
            endpoint="https://10.0.0.9:10933" if style is CommsStyle.LISTENING else None,
        ).aggregate.id

    workers = {
        "web-1": register("web-1", (alpha,), CommsStyle.LISTENING),
        "Web-2": register("Web-2", (alpha, beta_id), CommsStyle.POLLING),
        "db-1": register("db-1", (beta_id,), CommsStyle.SSH),
        "temp": register("temp", (default,), CommsStyle.POLLING),
    }
    app.update_worker(workers["Web-2"], pool_ids=(beta_id,), actor=TESTER)
    app.update_worker(
        workers["db-1"], name="db-primary", is_disabled=True, capacity=2,
        machine_policy_id=fast.aggregate.id, actor=TESTER,
    )
    healthy = app.get_worker(workers["web-1"])
    healthy.record_health(HealthStatus.HEALTHY, "disk space free: 80%", TESTER)
    app.save(healthy)
    app.deregister_worker(workers["temp"], actor=TESTER)
    (key, _text) = app.create_key(name="ci", permissions=(Permission.TASK_CREATE,), actor=TESTER)

    runner = new_runner(app, views)
    runner.setup()
    runner.catch_up()
    assert runner.position == app.recorder.max_notification_id()
    return Scene(app, views, alpha, beta_id, default, workers, key.aggregate.id, installed_at)


def names(rows: list[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in rows]


def test_pools_are_listed_in_sort_order_with_member_counts(scene: Scene) -> None:
    pools, total = list_pools(scene.views)
    assert total == 3
    assert [(p["name"], p["worker_count"], p["is_default"]) for p in pools] == [
        (DEFAULT_POOL_NAME, 0, True),
        ("Alpha", 1, False),
        ("beta", 2, False),
    ]
    beta = get_pool(scene.views, str(scene.beta))
    assert beta is not None and beta["description"] == "second" and beta["sort_order"] == 2
    assert get_pool(scene.views, "no-such-pool") is None
    page, total = list_pools(scene.views, skip=1, take=1)
    assert (names(page), total) == (["Alpha"], 3)


def test_workers_filter_by_pool_health_style_and_name(scene: Scene) -> None:
    everyone, total = list_workers(scene.views)
    assert (names(everyone), total) == (["db-primary", "web-1", "Web-2"], 3)

    in_beta, total = list_workers(scene.views, pool=str(scene.beta))
    assert (names(in_beta), total) == (["db-primary", "Web-2"], 2)
    in_alpha, _ = list_workers(scene.views, pool=str(scene.alpha))
    assert names(in_alpha) == ["web-1"]
    assert list_workers(scene.views, pool=str(scene.default)) == ([], 0)

    healthy, _ = list_workers(scene.views, health="healthy")
    assert names(healthy) == ["web-1"]
    assert healthy[0]["health_detail"] == "disk space free: 80%"
    assert healthy[0]["last_seen"] is not None
    unknown, _ = list_workers(scene.views, health="unknown")
    assert names(unknown) == ["db-primary", "Web-2"]

    ssh, _ = list_workers(scene.views, comms_style="ssh")
    assert names(ssh) == ["db-primary"]
    assert ssh[0]["is_disabled"] is True and ssh[0]["capacity"] == 2

    by_name, total = list_workers(scene.views, name="WEB")
    assert (names(by_name), total) == (["web-1", "Web-2"], 2)
    both, _ = list_workers(scene.views, name="web", comms_style="polling")
    assert names(both) == ["Web-2"]
    # The filter is text, not a pattern: "_" and "%" match only themselves.
    assert list_workers(scene.views, name="web_") == ([], 0)
    assert list_workers(scene.views, name="%") == ([], 0)
    assert names(list_workers(scene.views, name="eb-")[0]) == ["web-1", "Web-2"]


def test_workers_page_with_skip_and_take_and_report_the_total(scene: Scene) -> None:
    first, total = list_workers(scene.views, take=2)
    rest, total_again = list_workers(scene.views, skip=2, take=2)
    assert (names(first), names(rest)) == (["db-primary", "web-1"], ["Web-2"])
    assert total == total_again == 3
    assert list_workers(scene.views, skip=10) == ([], 3)


def test_one_worker_row_has_its_settings(scene: Scene) -> None:
    row = get_worker(scene.views, str(scene.workers["db-1"]))
    assert row is not None
    assert row["pool_ids"] == [str(scene.beta)]
    assert row["machine_policy_id"] == str(scene.app.resolve_policy("Fast checks").id)
    assert row["endpoint"] is None and row["comms_style"] == "ssh"
    assert get_worker(scene.views, str(scene.workers["temp"])) is None


def test_members_of_a_pool_carry_what_routing_needs(scene: Scene) -> None:
    members = members_of(scene.views, str(scene.beta))
    by_name = {m["worker_name"]: m for m in members}
    assert set(by_name) == {"db-primary", "Web-2"}
    assert by_name["db-primary"] == {
        "worker_id": str(scene.workers["db-1"]), "worker_name": "db-primary",
        "health_status": "unknown", "is_disabled": True, "capacity": 2, "running": 0,
        "online": True,  # an SSH worker has no agent to wait for
    }
    assert by_name["Web-2"]["is_disabled"] is False
    assert by_name["Web-2"]["online"] is False  # its agent was never heard from
    assert [m["worker_name"] for m in members_of(scene.views, str(scene.alpha))] == ["web-1"]
    assert members_of(scene.views, str(scene.alpha))[0]["health_status"] == "healthy"
    assert members_of(scene.views, str(scene.default)) == []


def test_policies_are_listed_by_name(scene: Scene) -> None:
    policies, total = list_policies(scene.views)
    assert total == 2
    assert names(policies) == [DEFAULT_POLICY_NAME, "Fast checks"]
    fast = policies[1]
    assert fast["health_check_interval_s"] == 60
    assert (fast["connectivity"], fast["cleanup"], fast["cleanup_after_s"]) == (
        "expected_online", "keep", None,
    )


def test_the_audit_log_pages_in_log_order_with_actors(scene: Scene) -> None:
    everything = read_events(scene.views, limit=10_000)
    positions = [e["position"] for e in everything.items]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert everything.next is None
    assert len(positions) == len(scene.app.recorder.select_notifications(start=0, limit=10_000))
    assert everything.items[0]["type"] == "Installation.Installed"
    assert everything.items[0]["actor"]["kind"] == "system"
    for entry in everything.items:
        installing = entry["position"] <= scene.installed_at
        assert entry["actor"]["kind"] == ("system" if installing else "user")
        assert installing or entry["actor"] == TESTER.as_dict()

    # Pages of 5 joined up give the same events; the last page has no ``next``.
    seen: list[int] = []
    after = 0
    while True:
        page = read_events(scene.views, after=after, limit=5)
        assert len(page.items) <= 5
        seen += [e["position"] for e in page.items]
        if page.next is None:
            break
        assert page.next == page.items[-1]["position"]
        after = page.next
    assert seen == positions

    later = read_events(scene.views, after=positions[3], limit=2)
    assert [e["position"] for e in later.items] == positions[4:6]
    assert later.next == positions[5]


def test_the_audit_log_filters_by_type_and_never_holds_a_key_hash(scene: Scene) -> None:
    renamed = read_events(scene.views, type="Worker.Renamed").items
    assert [(e["aggregate_id"], e["data"]) for e in renamed] == [
        (str(scene.workers["db-1"]), {"name": "db-primary"})
    ]
    keys = read_events(scene.views, type="ApiKey.Created").items
    assert [e["data"]["name"] for e in keys] == ["Administrator (created at install)", "ci"]
    assert keys[1]["aggregate_id"] == str(scene.key_id)
    whole_log = orjson.dumps(read_events(scene.views, limit=10_000).items).decode()
    for entry in keys:
        assert entry["data"]["secret_hash"] == REDACTED
        secret_hash = scene.app.aggregate_state(UUID(entry["aggregate_id"])).secret_hash
        assert len(secret_hash) == 64
        assert secret_hash not in whole_log
    assert keys[1]["data"]["permissions"] == ["TaskCreate"]


def test_steps_given_to_a_worker_count_as_its_load_until_they_end(
    app: Shoal, views: Views, new_runner: Callable[..., ProjectionRunner]
) -> None:
    pool = app.create_pool(name="Busy", actor=TESTER).aggregate.id
    worker = app.register_worker(
        name="w-busy", pool_ids=(pool,), comms_style=CommsStyle.POLLING, actor=TESTER
    ).aggregate.id
    steps = tuple(
        Step(name=f"s{i}", action=Action.SCRIPT, syntax=Syntax.BASH, script_body="true",
             start=Start.WITH_PREVIOUS if i else Start.AFTER_PREVIOUS)
        for i in range(3)
    )
    project = app.create_project(name="load", actor=TESTER).aggregate.id
    app.set_process(project, steps=steps, actor=TESTER)
    task = app.queue_run(project, actor=TESTER).aggregate.id
    app.update_task(task, lambda t: t.start("node", TESTER))
    for i in range(3):
        app.update_task(task, lambda t, i=i: t.assign(f"s{i}", pool, worker, "w-busy", TESTER))
    # A re-assignment of the same step does not count twice.
    app.update_task(task, lambda t: t.assign("s0", pool, worker, "w-busy", TESTER))
    runner = new_runner(app, views)
    runner.setup()
    runner.catch_up()
    assert members_of(views, str(pool))[0]["running"] == 3
    assert get_worker(views, str(worker))["running_steps"] == 3  # type: ignore[index]
    assert running_steps(views) == {str(worker): 3}

    app.update_task(task, lambda t: t.finish_step("s1", StepState.SUCCESS, 0, "", TESTER))
    runner.catch_up()
    assert members_of(views, str(pool))[0]["running"] == 2
    app.update_task(task, lambda t: t.finish(TaskState.FAILED, TESTER))
    runner.catch_up()
    assert members_of(views, str(pool))[0]["running"] == 0
    assert list_workers(views, pool=str(pool))[0][0]["running_steps"] == 0


def test_an_agent_is_online_between_came_online_and_went_offline(
    app: Shoal, views: Views, new_runner: Callable[..., ProjectionRunner]
) -> None:
    pool = app.create_pool(name="agents", actor=TESTER).aggregate.id
    wid = app.register_worker(name="a1", pool_ids=(pool,), comms_style=CommsStyle.LISTENING,
                              actor=TESTER).aggregate.id
    runner = new_runner(app, views)
    runner.setup()

    def online() -> bool:
        runner.catch_up()
        return bool(members_of(views, str(pool))[0]["online"])

    assert online() is False
    app.record_worker_online(wid, actor=TESTER)
    assert online() is True
    app.record_worker_offline(wid, "no heartbeat for 7s", actor=TESTER)
    assert online() is False
    assert members_of(views, str(pool))[0]["health_status"] == "unavailable"


def test_a_step_on_behalf_of_roles_shows_one_execution_per_target(
    app: Shoal, views: Views, new_runner: Callable[..., ProjectionRunner]
) -> None:
    pool = app.create_pool(name="Regional", actor=TESTER).aggregate.id
    env = app.create_environment(name="Live", actor=TESTER).aggregate
    targets = [
        app.create_target(name=name, roles=("web",), environment_ids=(env.id,), actor=TESTER)
        .aggregate.id for name in ("us", "eu")
    ]
    project = app.create_project(name="regional", actor=TESTER).aggregate.id
    app.set_process(project, steps=(
        Step(name="deploy", action=Action.SCRIPT, syntax=Syntax.BASH, script_body="true",
             on_behalf_of_roles=("web",)),
    ), actor=TESTER)
    task = app.queue_run(project, environment="live", actor=TESTER).aggregate.id
    candidates = [TargetCandidate(t, n, ("web",), (env.id,), None, False)
                  for t, n in zip(targets, ("us", "eu"), strict=True)]
    planned = plan_executions("deploy", targets_for(("web",), env.id, candidates), ("deploy",))
    app.update_task(task, lambda t: t.start("node", TESTER))
    app.update_task(task, lambda t: t.plan_executions("deploy", planned, TESTER))
    eu = planned[0]
    app.update_task(task, lambda t: t.assign(eu.key, pool, None, "built-in worker", TESTER))
    app.update_task(task, lambda t: t.mark_started(eu.key, 7, TESTER))
    app.update_task(task, lambda t: t.finish_step(eu.key, StepState.SUCCESS, 0, "", TESTER))
    runner = new_runner(app, views)
    runner.setup()
    runner.catch_up()

    row = get_task(views, str(task))
    assert row is not None and (row["environment"], row["environment_id"]) == ("Live", str(env.id))
    (deploy,) = row["steps"]
    assert deploy["state"] == "running" and deploy["worker_name"] is None
    assert [(x["target_name"], x["state"], x["worker_name"], x["exit_code"])
            for x in deploy["executions"]] == [
        ("eu", "success", "built-in worker", 0), ("us", "pending", None, None),
    ]
    assert deploy["executions"][0]["started"] is not None
    runs, total = target_runs(views, str(targets[1]))
    assert total == 1 and (runs[0]["task_id"], runs[0]["state"]) == (str(task), "success")
    assert (runs[0]["environment"], runs[0]["step"]) == ("Live", "deploy")

    app.update_task(task, lambda t: t.finish(TaskState.CANCELLED, TESTER))
    runner.catch_up()
    (deploy,) = get_task(views, str(task))["steps"]  # type: ignore[index]
    assert [x["state"] for x in deploy["executions"]] == ["success", "skipped"]
    assert target_runs(views, str(targets[0]))[0][0]["task_state"] == "cancelled"


def test_a_project_shows_a_renamed_environment_under_its_new_name(
    app: Shoal, views: Views, new_runner: Callable[..., ProjectionRunner]
) -> None:
    live = app.create_environment(name="Live", actor=TESTER).aggregate.id
    app.create_environment(name="Test", actor=TESTER)
    project = app.create_project(name="scoped", actor=TESTER).aggregate.id
    app.set_process(project, steps=(
        Step(name="both", action=Action.SCRIPT, syntax=Syntax.BASH, script_body="true",
             environments=("test", "live")),
        Step(name="test only", action=Action.SCRIPT, syntax=Syntax.BASH, script_body="true",
             environments=("Test",)),
    ), actor=TESTER)
    app.update_environment(live, name="Production", actor=TESTER)
    runner = new_runner(app, views)
    runner.setup()
    runner.catch_up()

    row = get_project(views, str(project))
    assert row is not None
    assert [s["environments"] for s in row["steps"]] == [["Test", "Production"], ["Test"]]
    task = app.queue_run(project, environment="Production", actor=TESTER).aggregate
    assert [s.environments for s in task.steps] == [("Test", "Production"), ("Test",)]


def test_a_nul_in_text_is_projected_on_every_engine(
    app: Shoal, views: Views, new_runner: Callable[..., ProjectionRunner], backend: Backend,
) -> None:
    """A step may print a NUL (binary output, ``find -print0``). PostgreSQL's text cannot
    hold one, and a line it refused would stop every projection at that event for good:
    there it reads as U+FFFD; SQLite keeps it as printed. Queries with one answer too."""
    task = app.queue_script(syntax=Syntax.BASH, script_body="find . -print0", actor=TESTER)
    task_id = task.aggregate.id
    app.append_log(task_id, "Run script", [["2026-12-07T05:00:00+00:00", "stdout", "a\0b\0"]],
                   actor=TESTER)
    runner = new_runner(app, views)
    runner.setup()
    runner.catch_up()
    assert runner.last_error is None
    lines = [line["text"] for line in read_log(views, str(task_id)) if line["stream"] == "stdout"]
    assert lines == (["a\0b\0"] if backend.kind == "sqlite" else ["a\ufffdb\ufffd"])
    assert list_workers(views, name="a\0b") == ([], 0)
