"""Bad requests about tasks and processes: a clear 4xx with a `detail`, and nothing
created (no task, no event: the store's position does not move)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.tasks_support import (
    OptionServer,
    position,
    project,
    sh,
    task_total,
    wait_task,
)
from tests.helpers import rid

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def refs(srv: OptionServer) -> Iterator[dict[str, Any]]:
    """Things the cases point at: a project with a process, an empty project, a finished
    task, a project whose run waits at a manual intervention."""
    with srv.client() as c:
        full = project(c, rid("full"), [sh("one", "true")])
        empty = c.post("/api/projects", json={"name": rid("empty")}).json()
        done = c.post("/api/tasks/script", json={"syntax": "sh", "script_body": "true"}).json()
        wait_task(c, done["id"])
        yield {"full": full, "empty": empty, "done": done}


def script(body: dict[str, Any]) -> Callable[[httpx.Client, dict], httpx.Response]:
    return lambda c, r: c.post("/api/tasks/script", json=body)


def process(steps: list[dict[str, Any]]) -> Callable[[httpx.Client, dict], httpx.Response]:
    return lambda c, r: c.put(f"/api/projects/{r['full']['id']}/process", json={"steps": steps})


OK = {"syntax": "bash", "script_body": "echo hi"}
CASES: list[tuple[str, Callable[[httpx.Client, dict], httpx.Response], tuple[int, ...], str]] = [
    ("unknown syntax", script({**OK, "syntax": "perl"}), (422,), "syntax"),
    ("missing syntax", script({"script_body": "echo"}), (422,), "syntax"),
    ("empty script", script({**OK, "script_body": ""}), (422,), "script_body"),
    ("blank script", script({**OK, "script_body": " \n\t"}), (422,), "script_body"),
    ("script over 1 MiB", script({**OK, "script_body": "#" * (MIB + 1)}), (413, 422), ""),
    ("unknown pool id", script({**OK, "worker_pool_id": str(uuid.uuid4())}), (422,), "does not exist"),
    ("unknown pool name", script({**OK, "worker_pool_id": "no-such-pool"}), (422,), "does not exist"),
    ("negative timeout", script({**OK, "timeout_s": -1}), (422,), "timeout_s"),
    ("zero timeout", script({**OK, "timeout_s": 0}), (422,), "timeout_s"),
    ("unknown field", script({**OK, "colour": "red"}), (422,), "colour"),
    ("duplicate step names", process([sh("a", "true"), sh("a", "true")]), (422,), "unique"),
    ("negative step timeout", process([sh("a", "true", timeout_s=-5)]), (422,), "timeout_s"),
    ("unknown step pool", process([sh("a", "true", worker_pool_id=str(uuid.uuid4()))]), (422,),
     "does not exist"),
    ("empty step script", process([sh("a", "")]), (422,), "script_body"),
    ("first step with_previous", process([sh("a", "true", start="with_previous")]), (422,), "with_previous"),
    ("unknown action", process([{"name": "a", "action": "teleport"}]), (422,), "action"),
    ("email without recipients", process([{"name": "a", "action": "email"}]), (422,), "email"),
    ("certificate without pem", process([{"name": "a", "action": "import_certificate"}]), (422,),
     "certificate"),
    ("run of a project with no steps", lambda c, r: c.post(f"/api/projects/{r['empty']['id']}/runs",
                                                             json={}), (422,), "no steps"),
    ("run of an unknown project", lambda c, r: c.post(f"/api/projects/{uuid.uuid4()}/runs", json={}),
     (404,), "not found"),
    ("cancel a finished task", lambda c, r: c.post(f"/api/tasks/{r['done']['id']}/cancel"), (409,), "ended"),
    ("cancel an unknown task", lambda c, r: c.post(f"/api/tasks/{uuid.uuid4()}/cancel"), (404,), "not found"),
    ("intervention on a step that is not waiting", lambda c, r: c.post(
        f"/api/tasks/{r['done']['id']}/interventions/Run script", json={"decision": "approve"}), (409,), ""),
    ("run_as_user with a NUL byte", lambda c, r: c.patch(
        "/api/configuration/built-in-worker", json={"run_as_user": "ro\u0000ot"}), (422,), "valid user name"),
    ("run_as_user with a slash", lambda c, r: c.patch(
        "/api/configuration/built-in-worker", json={"run_as_user": "../root"}), (422,), "valid user name"),
    ("run_as_user nobody has", lambda c, r: c.patch(
        "/api/configuration/built-in-worker", json={"run_as_user": "no_such_user_x"}), (422,), "no OS user"),
    ("intervention with a bad decision", lambda c, r: c.post(
        f"/api/tasks/{r['done']['id']}/interventions/Run script", json={"decision": "maybe"}), (422,),
     "decision"),
]


@pytest.mark.parametrize(("what", "call", "statuses", "mentions"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_4xx_and_creates_nothing(
    srv: OptionServer, refs: dict[str, Any], what: str, call: Callable[[httpx.Client, dict], httpx.Response],
    statuses: tuple[int, ...], mentions: str,
) -> None:
    with srv.client() as c:
        tasks_before, at_before = task_total(c), position(c)
        r = call(c, refs)
        assert r.status_code in statuses, (what, r.status_code, r.text[:300])
        detail = r.json()["detail"]
        assert isinstance(detail, str) and detail.strip(), r.text[:300]
        assert mentions.lower() in detail.lower(), (what, detail)
        assert task_total(c) == tasks_before, f"{what}: a task was created"
        assert position(c) == at_before, f"{what}: an event was recorded"
        # (the process PUT cases: no event also means the stored process is unchanged)


def test_a_script_just_under_the_body_limit_is_accepted(srv: OptionServer) -> None:
    body = "#" * (MIB - 200) + "\necho big-ok"
    with srv.client() as c:
        r = c.post("/api/tasks/script", json={**OK, "script_body": body})
        assert r.status_code == 201, r.text[:300]
        assert wait_task(c, r.json()["id"])["state"] == "success"


def test_rejected_process_changes_left_the_process_as_it_was(srv: OptionServer, refs: dict[str, Any]) -> None:
    with srv.client() as c:
        stored = c.get(f"/api/projects/{refs['full']['id']}").json()["steps"]
    assert [(s["name"], s["script_body"]) for s in stored] == [("one", "true")]
