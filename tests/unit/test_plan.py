"""Running a process: groups of parallel steps, step conditions and task outcomes."""

from __future__ import annotations

import pytest

from domain.plan import StepState, TaskState, groups, should_run, skip_reason, task_outcome
from domain.process import Action, Condition, Start, Step

S = StepState
A, W = Start.AFTER_PREVIOUS, Start.WITH_PREVIOUS


def steps(*starts: Start) -> list[Step]:
    return [Step(name=f"s{i}", action=Action.MANUAL_INTERVENTION, start=s) for i, s in enumerate(starts)]


@pytest.mark.parametrize(
    ("starts", "expected"),
    [
        ((), []),
        ((A,), [[0]]),
        ((A, A, A), [[0], [1], [2]]),
        ((A, W), [[0, 1]]),
        ((A, W, W), [[0, 1, 2]]),
        ((A, W, A, W, W, A), [[0, 1], [2, 3, 4], [5]]),
        ((A, A, W), [[0], [1, 2]]),
        ((W,), [[0]]),
        ((W, W, A), [[0, 1], [2]]),
    ],
    ids=["empty", "one", "sequential", "pair", "three-together", "mixed", "last-joins",
         "first-with-previous", "first-with-previous-then-joined"],
)
def test_groups(starts: tuple[Start, ...], expected: list[list[int]]) -> None:
    assert groups(steps(*starts)) == expected


@pytest.mark.parametrize(
    ("condition", "failed_before", "runs"),
    [
        (Condition.SUCCESS, False, True),
        (Condition.SUCCESS, True, False),
        (Condition.FAILURE, False, False),
        (Condition.FAILURE, True, True),
        (Condition.ALWAYS, False, True),
        (Condition.ALWAYS, True, True),
    ],
)
def test_should_run(condition: Condition, failed_before: bool, runs: bool) -> None:
    assert should_run(condition, failed_before) is runs


@pytest.mark.parametrize(
    ("condition", "says"),
    [(Condition.SUCCESS, "an earlier step failed"), (Condition.FAILURE, "only when an earlier step failed")],
)
def test_skip_reason_explains_the_condition(condition: Condition, says: str) -> None:
    reason = skip_reason(condition)

    # The log shows "Step skipped: <reason>", so the reason must not say "skipped" again.
    assert not reason.startswith("skipped")
    assert says in reason


@pytest.mark.parametrize(
    ("states", "cancelled", "outcome"),
    [
        ((), False, TaskState.SUCCESS),
        ((S.SUCCESS,), False, TaskState.SUCCESS),
        ((S.SUCCESS, S.SKIPPED), False, TaskState.SUCCESS),
        ((S.SKIPPED, S.SKIPPED), False, TaskState.SUCCESS),
        ((S.SUCCESS, S.FAILED), False, TaskState.FAILED),
        ((S.CANCELLED,), False, TaskState.FAILED),
        ((S.TIMED_OUT, S.FAILED), False, TaskState.FAILED),
        ((S.TIMED_OUT, S.CANCELLED), False, TaskState.FAILED),
        ((S.TIMED_OUT,), False, TaskState.TIMED_OUT),
        ((S.SUCCESS, S.TIMED_OUT, S.SKIPPED), False, TaskState.TIMED_OUT),
        ((S.SUCCESS,), True, TaskState.CANCELLED),
        ((S.FAILED, S.TIMED_OUT), True, TaskState.CANCELLED),
        ((), True, TaskState.CANCELLED),
    ],
    ids=["no-steps", "success", "success-and-skipped", "all-skipped", "one-failed",
         "step-cancelled", "failed-beats-timed-out", "step-cancelled-beats-timed-out",
         "timed-out-only", "timed-out-with-success", "cancel-wins-over-success",
         "cancel-wins-over-failure", "cancel-with-no-steps"],
)
def test_task_outcome(states: tuple[StepState, ...], cancelled: bool, outcome: TaskState) -> None:
    assert task_outcome(states, cancelled) is outcome


FINAL_STEPS = {S.SUCCESS, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.SKIPPED}
FAILURES = {S.FAILED, S.TIMED_OUT, S.CANCELLED}


@pytest.mark.parametrize("state", list(StepState))
def test_step_state_is_final(state: StepState) -> None:
    assert state.is_final is (state in FINAL_STEPS)


@pytest.mark.parametrize("state", list(StepState))
def test_step_state_is_failure(state: StepState) -> None:
    assert state.is_failure is (state in FAILURES)


@pytest.mark.parametrize("state", list(TaskState))
def test_task_state_is_final(state: TaskState) -> None:
    assert state.is_final is (state not in {TaskState.QUEUED, TaskState.EXECUTING})
