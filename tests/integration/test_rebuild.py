"""Rebuild and verify: replaying the log gives the same read models, and a corrupted
live row shows up when compared with a scratch build up to the same position."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import pytest

from domain.app import Shoal
from domain.executions import TargetCandidate, plan_executions
from domain.keys import Permission
from domain.plan import StepState, TaskState
from domain.process import Action, Start, Step, Syntax
from domain.workers import CommsStyle, HealthStatus
from projections.runner import ProjectionRunner, diff
from tests.helpers import TESTER, rid
from tests.integration.conftest import Views
from tests.sshworkers import ssh_for

pytestmark = pytest.mark.integration

Runners = Callable[..., ProjectionRunner]


def busy_history(app: Shoal) -> dict[str, UUID]:
    """Pools, workers moved between them, a rename, health, a deregistration, a policy
    change, a key, environments and a target: something of every kind each projection
    handles."""
    blue = app.create_pool(name=rid("blue"), sort_order=2, actor=TESTER).aggregate.id
    green = app.create_pool(name=rid("green"), is_default=True, actor=TESTER).aggregate.id
    policy = app.create_policy(name=rid("policy"), health_check_interval_s=120, actor=TESTER)
    app.update_policy(policy.aggregate.id, description="checked often", actor=TESTER)
    ids = {}
    for i, style in enumerate(CommsStyle):
        ids[style.value] = app.register_worker(
            name=rid(f"w{i}"), pool_ids=(blue,), comms_style=style, actor=TESTER,
            secret_hash=None if style is CommsStyle.SSH else f"$2a$10$hash-of-{i}",
            ssh=ssh_for(style),
        ).aggregate.id
    app.update_worker(ids["ssh"], pool_ids=(green, blue), capacity=1, actor=TESTER)
    app.update_worker(ids["polling"], name=rid("renamed"), is_disabled=True, actor=TESTER)
    app.update_worker(ids["listening"], machine_policy_id=policy.aggregate.id, actor=TESTER)
    worker = app.get_worker(ids["listening"])
    worker.came_online(TESTER)
    worker.record_health(HealthStatus.HAS_WARNINGS, "only 8% disk space free", TESTER)
    worker.went_offline("no heartbeat for 30s", TESTER)
    app.save(worker)
    app.deregister_worker(ids["polling"], actor=TESTER)
    app.update_pool(blue, name=rid("navy"), description="renamed", actor=TESTER)
    app.create_key(name=rid("key"), permissions=(Permission.WORKER_VIEW,), actor=TESTER)
    project = app.create_project(name=rid("web"), actor=TESTER).aggregate
    app.set_process(project.id, steps=(
        Step(name="build", action=Action.SCRIPT, syntax=Syntax.BASH, script_body="make"),
        Step(name="approve", action=Action.MANUAL_INTERVENTION, start=Start.WITH_PREVIOUS),
    ), actor=TESTER)
    app.update_project(project.id, name=rid("site"), description="renamed", actor=TESTER)
    prod = app.create_environment(name=rid("prod"), actor=TESTER).aggregate.id
    test = app.create_environment(name=rid("test"), actor=TESTER).aggregate.id
    app.update_environment(prod, name=rid("live"), description="renamed", actor=TESTER)
    region = app.create_target(
        name=rid("region"), roles=("web", "db"), environment_ids=(prod, test),
        default_worker_pool_id=green, actor=TESTER,
    ).aggregate.id
    app.update_target(
        region, name=rid("eu"), roles=("api",), environment_ids=(prod,),
        default_worker_pool_id=None, is_disabled=True, actor=TESTER,
    )
    behalf = app.create_project(name=rid("regional"), actor=TESTER).aggregate.id
    app.set_process(behalf, steps=(Step(
        name="deploy", action=Action.SCRIPT, syntax=Syntax.BASH, script_body="true",
        on_behalf_of_roles=("api",),
    ),), actor=TESTER)
    run = app.queue_run(behalf, environment=str(prod), actor=TESTER).aggregate.id
    planned = plan_executions("deploy", [TargetCandidate(region, "eu", ("api",), (prod,), None,
                                                         False)], ())
    app.update_task(run, lambda t: t.start("node-1", TESTER))
    app.update_task(run, lambda t: t.plan_executions("deploy", planned, TESTER))
    app.update_task(run, lambda t: t.assign(planned[0].key, green, None, "built-in worker", TESTER))
    app.update_task(run, lambda t: t.finish_step(planned[0].key, StepState.FAILED, 1, "", TESTER))
    app.update_task(run, lambda t: t.finish(TaskState.FAILED, TESTER))
    task = app.queue_script(syntax=Syntax.BASH, script_body="echo hi", actor=TESTER).aggregate
    step = task.steps[0].name
    app.update_task(task.id, lambda t: t.start("node-1", TESTER))
    app.update_task(task.id, lambda t: t.assign(step, green, None, "built-in worker", TESTER))
    app.update_task(task.id, lambda t: t.mark_started(step, 4242, TESTER))
    app.append_log(task.id, step, [["2026-01-01T00:00:00Z", "stdout", "hi"]], actor=TESTER)
    app.store_artifact(task.id, step, "out.txt", 3, "ab" * 32, actor=TESTER)
    app.push_package("app", "1.0", sha256="cd" * 32, size=9, file_name="app.tgz", actor=TESTER)
    app.update_task(task.id, lambda t: t.finish_step(step, StepState.SUCCESS, 0, "", TESTER))
    app.update_task(task.id, lambda t: t.finish(TaskState.SUCCESS, TESTER))
    return ids


def test_a_rebuild_reproduces_the_live_read_models(
    app: Shoal, views: Views, new_runner: Runners
) -> None:
    busy_history(app)
    runner = new_runner(app, views)
    runner.setup()
    runner.catch_up()
    live = runner.dump()
    assert all(any(rows for rows in tables.values()) for tables in live.values())

    applied = runner.rebuild()
    assert applied == len(app.recorder.select_notifications(start=0, limit=10**6))
    assert runner.position == app.recorder.max_notification_id()
    rebuilt = runner.dump()
    assert diff(live, rebuilt) == []
    assert rebuilt == live


def test_a_corrupted_row_is_found_by_comparing_with_a_scratch_build(
    app: Shoal, new_views: Callable[..., Views], new_runner: Runners
) -> None:
    ids = busy_history(app)
    live_views = new_views()
    live = new_runner(app, live_views)
    live.setup()
    live.catch_up()
    verified_at = live.position
    with live_views.write() as cur:
        cur.execute("UPDATE rm_workers SET name = 'x' WHERE id = ?", (str(ids["ssh"]),))
    # Events written after the live position must not count as differences.
    app.create_pool(name=rid("later"), actor=TESTER)
    assert (app.recorder.max_notification_id() or 0) > verified_at

    scratch = new_runner(app, new_views(scratch=True))
    scratch.setup()
    scratch.catch_up(until=verified_at)
    assert scratch.position == verified_at

    differences = diff(live.dump(), scratch.dump())
    real_name = app.get_worker(ids["ssh"]).name
    assert len(differences) == 2, differences
    only_live, only_rebuilt = differences
    assert only_live.startswith("workers/rm_workers: only in live view:")
    assert "'x'" in only_live and str(ids["ssh"]) in only_live
    assert only_rebuilt.startswith("workers/rm_workers: only in rebuilt view:")
    assert repr(real_name) in only_rebuilt

    with live_views.write() as cur:  # repaired, the two agree again
        cur.execute("UPDATE rm_workers SET name = ? WHERE id = ?", (real_name, str(ids["ssh"])))
    assert diff(live.dump(), scratch.dump()) == []
