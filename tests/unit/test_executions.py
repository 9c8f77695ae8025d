"""Steps on behalf of roles: which targets they run for, how executions are named, what
they add up to, environment scoping, and the Task aggregate's part in it."""

from __future__ import annotations

from uuid import UUID

import pytest

from domain.actors import SYSTEM
from domain.errors import InvalidTransition, Rejected
from domain.executions import (
    TargetCandidate,
    execution_key,
    executions_outcome,
    no_targets_reason,
    plan_executions,
    scope_skip_reason,
    targets_for,
)
from domain.plan import StepState, TaskState
from domain.process import Action, Step, Syntax, check_step
from domain.tasks import Task, TaskKind
from tests.unit.support import ALICE

PROD, TEST = UUID(int=1), UUID(int=2)
POOL = UUID(int=9)


def target(name: str, *roles: str, envs: tuple[UUID, ...] = (PROD,), disabled: bool = False,
           n: int = 0) -> TargetCandidate:
    return TargetCandidate(UUID(int=100 + n), name, roles, envs, None, disabled)


def test_targets_are_those_enabled_in_the_environment_with_any_role_by_name() -> None:
    targets = [
        target("us", "web", n=1), target("EU", "Web", "db", n=2), target("ap", "db", n=3),
        target("off", "web", disabled=True, n=4), target("test", "web", envs=(TEST,), n=5),
        target("both", "cache", envs=(TEST, PROD), n=6),
    ]
    assert [t.name for t in targets_for(("web", "cache"), PROD, targets)] == ["both", "EU", "us"]
    assert [t.name for t in targets_for(("DB",), PROD, targets)] == ["ap", "EU"]
    assert targets_for(("web",), UUID(int=3), targets) == []
    assert targets_for((), PROD, targets) == []


def test_execution_keys_are_unique_within_the_task() -> None:
    assert execution_key("deploy", "eu", ()) == "deploy [eu]"
    assert execution_key("deploy", "eu", {"deploy [eu]"}) == "deploy [eu] #2"
    assert execution_key("deploy", "eu", {"deploy [eu]", "deploy [eu] #2"}) == "deploy [eu] #3"
    planned = plan_executions("deploy", [target("eu", "web", n=1), target("us", "web", n=2)],
                              {"deploy", "deploy [us]"})
    assert [p.key for p in planned] == ["deploy [eu]", "deploy [us] #2"]
    assert planned[0].target_id == UUID(int=101) and planned[0].roles == ("web",)


@pytest.mark.parametrize(("states", "expected"), [
    ([StepState.SUCCESS, StepState.SUCCESS], (StepState.SUCCESS, "2 of 2 targets succeeded")),
    ([StepState.SUCCESS, StepState.FAILED], (StepState.FAILED, "1 of 2 targets failed: b")),
    ([StepState.TIMED_OUT, StepState.FAILED], (StepState.FAILED, "1 of 2 targets failed: b")),
    ([StepState.TIMED_OUT, StepState.SUCCESS], (StepState.TIMED_OUT, "1 of 2 targets timed out: a")),
    ([StepState.CANCELLED, StepState.SUCCESS],
     (StepState.CANCELLED, "cancelled (1 of 2 targets succeeded)")),
    ([StepState.SKIPPED, StepState.SUCCESS], (StepState.SUCCESS, "1 of 2 targets succeeded")),
])
def test_a_step_fails_when_any_execution_failed(
    states: list[StepState], expected: tuple[StepState, str]
) -> None:
    assert executions_outcome(list(zip(("a", "b"), states, strict=True))) == expected


def test_the_no_targets_message_names_roles_and_environment() -> None:
    assert no_targets_reason(("web",), "Prod") == (
        "no enabled deployment target in environment 'Prod' has role 'web'"
    )
    assert no_targets_reason(("web", "db"), "Prod").endswith("has any of the roles 'web', 'db'")


def test_a_scoped_step_runs_only_in_its_environments() -> None:
    assert scope_skip_reason((), None) is None
    assert scope_skip_reason((), "Prod") is None
    assert scope_skip_reason(("Prod", "Staging"), "prod") is None
    assert scope_skip_reason(("Prod",), "Test") == "it runs only in 'Prod', not in 'Test'"
    assert scope_skip_reason(("Prod",), None) == (
        "it runs only in 'Prod', and this run is into no environment"
    )


SCRIPT = Step(name="deploy", action=Action.SCRIPT, syntax=Syntax.BASH, script_body="true",
              on_behalf_of_roles=("web",))


def test_step_roles_and_environments_are_cleaned_and_checked() -> None:
    step = check_step(Step(name="d", action=Action.SCRIPT, syntax=Syntax.BASH, script_body="x",
                           on_behalf_of_roles=(" web ", "WEB", "db"), environments=(" Prod ",)))
    assert step.on_behalf_of_roles == ("web", "db") and step.environments == ("Prod",)
    for bad, message in [
        ({"on_behalf_of_roles": ("",)}, "role name must not be empty"),
        ({"environments": ("Prod", "prod")}, "listed twice"),
        ({"skip_if_no_targets": True}, "needs on_behalf_of_roles"),
        ({"max_parallelism": 0}, "at least 1"),
    ]:
        with pytest.raises(Rejected, match=message):
            check_step(Step(name="d", action=Action.SCRIPT, syntax=Syntax.BASH, script_body="x",
                            **bad))  # type: ignore[arg-type]
    with pytest.raises(Rejected, match="only script steps"):
        check_step(Step(name="m", action=Action.MANUAL_INTERVENTION, on_behalf_of_roles=("web",)))


def running(*steps: Step) -> Task:
    task = Task(kind=TaskKind.DEPLOYMENT, name="Web", project_id=None, steps=steps or (SCRIPT,),
                actor=ALICE, environment_id=PROD, environment_name="Prod")
    task.start("node", SYSTEM)
    task.collect_events()
    return task


def test_planned_executions_run_as_their_own_runs_under_the_step() -> None:
    task = running()
    planned = plan_executions("deploy", [target("eu", "web", n=1), target("us", "web", n=2)],
                              task.runs.keys())
    task.plan_executions("deploy", planned, SYSTEM)
    assert [type(e).__name__ for e in task.collect_events()] == ["ExecutionsPlanned"]
    assert task.run_of("deploy").state is StepState.RUNNING
    eu, us = planned
    assert task.spec_of(eu.key) is task.step("deploy") and task.execution_of(eu.key) == eu
    assert task.execution_of("deploy") is None

    task.assign(eu.key, POOL, None, "built-in worker", SYSTEM)
    task.mark_started(eu.key, 1, SYSTEM)
    task.finish_step(eu.key, StepState.SUCCESS, 0, "", SYSTEM)
    task.finish_step(us.key, StepState.FAILED, 1, "", SYSTEM)
    assert not task.finish_if_done(SYSTEM)  # the step itself has not ended yet
    task.finish_step("deploy", StepState.FAILED, None, "1 of 2 targets failed: us", SYSTEM)
    assert task.finish_if_done(SYSTEM) and task.state is TaskState.FAILED


def test_executions_are_planned_once_and_only_for_steps_on_behalf_of_roles() -> None:
    task = running(SCRIPT, Step(name="plain", action=Action.SCRIPT, syntax=Syntax.BASH,
                                script_body="true"))
    planned = plan_executions("deploy", [target("eu", "web")], task.runs.keys())
    with pytest.raises(InvalidTransition, match="no executions"):
        task.plan_executions("deploy", (), SYSTEM)
    with pytest.raises(InvalidTransition, match="does not run on behalf"):
        task.plan_executions("plain", planned, SYSTEM)
    with pytest.raises(InvalidTransition, match="new and unique"):
        task.plan_executions("deploy", plan_executions("deploy", [target("eu", "web")], ()) * 2,
                             SYSTEM)
    task.plan_executions("deploy", planned, SYSTEM)
    with pytest.raises(InvalidTransition, match="already planned"):
        task.plan_executions("deploy", planned, SYSTEM)
    with pytest.raises(InvalidTransition, match="one execution per target"):
        task.assign("deploy", POOL, None, "built-in worker", SYSTEM)
    with pytest.raises(InvalidTransition, match="no step named"):
        task.assign("deploy [nowhere]", POOL, None, "built-in worker", SYSTEM)


def test_ending_the_task_skips_executions_that_never_ran() -> None:
    task = running()
    (eu,) = plan_executions("deploy", [target("eu", "web")], task.runs.keys())
    task.plan_executions("deploy", (eu,), SYSTEM)
    task.finish(TaskState.CANCELLED, SYSTEM)
    assert task.run_of(eu.key).state is StepState.SKIPPED
    assert task.run_of("deploy").state is StepState.SKIPPED
