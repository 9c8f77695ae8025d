"""Processes: each rule a step or a process breaks is rejected with a message naming it."""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID, uuid4

import pytest

from domain.errors import Rejected
from domain.process import (
    MAX_SCRIPT_BYTES,
    MAX_STEPS,
    Action,
    Certificate,
    Email,
    Start,
    Step,
    Syntax,
    check_process,
    check_script,
    check_step,
    with_current_environments,
)
from domain.rules import MAX_NAME_LENGTH

SCRIPT = Step(name="Build", action=Action.SCRIPT, syntax=Syntax.BASH, script_body="make")
EMAIL = Step(name="Tell", action=Action.EMAIL, email=Email(("ops@example.com",), "Done", "ok"))
MANUAL = Step(name="Approve", action=Action.MANUAL_INTERVENTION, instructions="Look at it")
CERT = Step(name="Import", action=Action.IMPORT_CERTIFICATE, certificate=Certificate("web", "PEM TEXT"))


@pytest.mark.parametrize("step", [SCRIPT, EMAIL, MANUAL, CERT], ids=lambda s: s.action.value)
def test_a_valid_step_passes_unchanged(step: Step) -> None:
    assert check_step(step) == step


def test_check_step_strips_the_name() -> None:
    assert check_step(replace(SCRIPT, name="  Build  ")) == SCRIPT


@pytest.mark.parametrize(
    "body", ["x" * MAX_SCRIPT_BYTES, "é" * (MAX_SCRIPT_BYTES // 2)], ids=["ascii", "two-byte"]
)
def test_a_script_of_exactly_the_limit_passes(body: str) -> None:
    assert check_step(replace(SCRIPT, script_body=body)).script_body == body


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (replace(SCRIPT, name=""), "step name must not be empty"),
        (replace(SCRIPT, name="   "), "step name must not be empty"),
        (replace(SCRIPT, name="x" * (MAX_NAME_LENGTH + 1)), "step name must be at most"),
        (replace(SCRIPT, name="a\nb"), "step name must not contain control characters"),
    ],
    ids=["empty", "blank", "too-long", "control-character"],
)
def test_bad_step_names_are_rejected(step: Step, message: str) -> None:
    with pytest.raises(Rejected, match=message):
        check_step(step)


BAD_STEPS = {
    "script-without-syntax": (replace(SCRIPT, syntax=None), "syntax"),
    "script-without-body": (replace(SCRIPT, script_body=None), "script_body must not be empty"),
    "script-blank-body": (replace(SCRIPT, script_body=" \n\t"), "script_body must not be empty"),
    "script-too-big": (replace(SCRIPT, script_body="x" * (MAX_SCRIPT_BYTES + 1)), "at most"),
    "script-too-big-in-bytes": (replace(SCRIPT, script_body="é" * (MAX_SCRIPT_BYTES // 2 + 1)), "at most"),
    "timeout-zero": (replace(SCRIPT, timeout_s=0), "timeout_s must be positive"),
    "timeout-negative": (replace(SCRIPT, timeout_s=-5), "timeout_s must be positive"),
    "parallelism-zero": (replace(SCRIPT, max_parallelism=0), "max_parallelism must be at least 1"),
    "parallelism-negative": (replace(SCRIPT, max_parallelism=-1), "max_parallelism must be at least 1"),
    "email-with-pool": (replace(EMAIL, worker_pool_id=uuid4()), "runs in the server"),
    "email-with-script": (replace(EMAIL, script_body="echo"), "runs in the server"),
    "manual-with-pool": (replace(MANUAL, worker_pool_id=uuid4()), "runs in the server"),
    "manual-with-script": (replace(MANUAL, script_body="echo"), "runs in the server"),
    "cert-with-pool": (replace(CERT, worker_pool_id=uuid4()), "runs in the server"),
    "cert-with-script": (replace(CERT, script_body="echo"), "runs in the server"),
    "email-without-email": (replace(EMAIL, email=None), "needs email.to"),
    "email-without-recipients": (replace(EMAIL, email=Email((), "s", "b")), "needs email.to"),
    "email-no-at": (replace(EMAIL, email=Email(("ops.example.com",), "s", "b")), "not an email address"),
    "email-space": (replace(EMAIL, email=Email(("a b@example.com",), "s", "b")), "not an email address"),
    "email-newline": (
        replace(EMAIL, email=Email(("ok@example.com", "x@y\r\nbcc:z@w"), "s", "b")),
        "not an email address",
    ),
    "cert-without-certificate": (replace(CERT, certificate=None), "needs certificate.pem"),
    "cert-blank-pem": (replace(CERT, certificate=Certificate("web", "  \n")), "needs certificate.pem"),
}


@pytest.mark.parametrize(("step", "message"), list(BAD_STEPS.values()), ids=list(BAD_STEPS))
def test_a_bad_step_is_rejected_naming_it(step: Step, message: str) -> None:
    with pytest.raises(Rejected, match=message) as caught:
        check_step(step)

    assert repr(step.name) in str(caught.value)


@pytest.mark.parametrize(("step", "message"), list(BAD_STEPS.values()), ids=list(BAD_STEPS))
def test_a_process_with_a_bad_step_is_rejected(step: Step, message: str) -> None:
    with pytest.raises(Rejected, match=message):
        check_process((MANUAL, step))


@pytest.mark.parametrize(
    ("syntax", "body", "message"),
    [
        (None, "echo", "needs a syntax"),
        (Syntax.SH, None, "script_body must not be empty"),
        (Syntax.SH, "", "script_body must not be empty"),
        (Syntax.PYTHON, "x" * (MAX_SCRIPT_BYTES + 1), f"at most {MAX_SCRIPT_BYTES} bytes"),
    ],
    ids=["no-syntax", "no-body", "empty-body", "too-big"],
)
def test_check_script_rejects(syntax: Syntax | None, body: str | None, message: str) -> None:
    with pytest.raises(Rejected, match=message):
        check_script(syntax, body)


@pytest.mark.parametrize(("syntax", "body"), [(None, "echo"), (Syntax.SH, "")], ids=["no-syntax", "no-body"])
def test_check_script_names_the_step_when_given(syntax: Syntax | None, body: str) -> None:
    with pytest.raises(Rejected, match=r"^step 'Deploy': "):
        check_script(syntax, body, "Deploy")


def test_a_valid_process_passes_unchanged() -> None:
    process = (SCRIPT, replace(EMAIL, start=Start.WITH_PREVIOUS), MANUAL, CERT)

    assert check_process(process) == process


def test_an_empty_process_passes() -> None:
    assert check_process(()) == ()


def test_check_process_returns_stripped_names() -> None:
    assert check_process((replace(SCRIPT, name=" Build "),)) == (SCRIPT,)


@pytest.mark.parametrize("second", ["Build", "build", "BUILD", "  build "])
def test_duplicate_step_names_are_rejected_in_any_case(second: str) -> None:
    with pytest.raises(Rejected, match="step names must be unique") as caught:
        check_process((SCRIPT, replace(MANUAL, name=second)))

    assert second.strip() in str(caught.value)


def test_the_first_step_cannot_start_with_previous() -> None:
    with pytest.raises(Rejected, match="'Build' is first, so it cannot start with_previous"):
        check_process((replace(SCRIPT, start=Start.WITH_PREVIOUS), MANUAL))


def test_a_process_may_have_max_steps() -> None:
    process = tuple(replace(MANUAL, name=f"s{i}") for i in range(MAX_STEPS))

    assert len(check_process(process)) == MAX_STEPS


def test_a_process_with_more_than_max_steps_is_rejected() -> None:
    process = tuple(replace(MANUAL, name=f"s{i}") for i in range(MAX_STEPS + 1))

    with pytest.raises(Rejected, match=f"at most {MAX_STEPS} steps"):
        check_process(process)


PROD, TEST = UUID(int=1), UUID(int=2)
SCOPED = replace(SCRIPT, environments=("Prod", "Test"), environment_ids=(PROD, TEST))


@pytest.mark.parametrize(("step", "names", "expected"), [
    # Renamed since the process was saved: the step follows.
    (SCOPED, {PROD: "Production", TEST: "Test"}, ("Production", "Test")),
    # Unchanged.
    (SCOPED, {PROD: "Prod", TEST: "Test"}, ("Prod", "Test")),
    # Deleted: the old name stays (no run is into it), never "everywhere".
    (SCOPED, {TEST: "QA"}, ("Prod", "QA")),
    (SCOPED, {}, ("Prod", "Test")),
    # Saved before ids were kept, or not scoped at all: as it is.
    (replace(SCRIPT, environments=("Prod",)), {PROD: "Production"}, ("Prod",)),
    (SCRIPT, {PROD: "Production"}, ()),
    (replace(SCRIPT, environments=("Prod",), environment_ids=(PROD, TEST)), {PROD: "X"}, ("Prod",)),
])
def test_a_run_takes_the_current_names_of_a_step_s_environments(
    step: Step, names: dict[UUID, str], expected: tuple[str, ...]
) -> None:
    got = with_current_environments(step, names)

    assert got.environments == expected
    assert got.environment_ids == step.environment_ids
