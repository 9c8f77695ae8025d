"""Small things every test tier shares: random names, a deadline helper, an actor."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from domain.actors import Actor, ActorKind

T = TypeVar("T")

# Who the tests act as; every event they cause carries it.
TESTER = Actor(ActorKind.USER, "user-tester", "Test User")


def rid(prefix: str = "x") -> str:
    """A name no other test uses, e.g. ``pool-3f9a1c2b``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(
    predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; fail the
    test with ``what`` when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate!r}")
        time.sleep(interval)


def assigned_script_task(app: Any, step: str = "Run script") -> tuple[uuid.UUID, uuid.UUID, int]:
    """A running script task whose one step is assigned to a fresh polling worker in the
    default pool: (task id, worker id, the assignment's fencing token)."""
    from domain.process import Syntax
    from domain.workers import CommsStyle

    worker = app.register_worker(name=rid("w"), pool_ids=(app.default_pool_id(),),
                                 comms_style=CommsStyle.POLLING, actor=TESTER).aggregate.id
    task = app.queue_script(syntax=Syntax.BASH, script_body="echo", actor=TESTER).aggregate.id
    app.update_task(task, lambda t: t.start("n1", TESTER))
    saved = app.update_task(task, lambda t: t.assign(step, None, worker, "w", TESTER))
    token = saved.aggregate.run_of(step).assignment
    assert token is not None
    return task, worker, token
