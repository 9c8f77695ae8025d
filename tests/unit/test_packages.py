"""Packages of the built-in feed, packages on steps, and artifacts on tasks (domain only)."""

from __future__ import annotations

import pytest

from domain.app import Shoal
from domain.artifacts import name_problem
from domain.errors import Conflict, InvalidTransition, NotFound, Rejected
from domain.messages import PackageRef, Report, decode_report, encode
from domain.packages import Package, check_file_name, check_package_id, check_version, is_archive
from domain.plan import StepState
from domain.process import Action, Step, Syntax, check_process
from domain.reports import StepReport
from domain.tasks import Task
from tests.helpers import assigned_script_task as assigned
from tests.unit.support import ALICE, events_after, head, replay
from tests.unit.test_step_reports import STEP, agent

SHA = "ab" * 32


def push(app: Shoal, package_id: str = "app", version: str = "1.0.0", file_name: str = "app.tgz") -> Package:
    return app.push_package(package_id, version, sha256=SHA, size=10, file_name=file_name,
                            actor=ALICE).aggregate


@pytest.mark.parametrize("value", ["app", "my-app", "My.App_2", "a"])
def test_good_package_ids(value: str) -> None:
    assert check_package_id(value) == value


@pytest.mark.parametrize("value", ["", "../x", "a/b", "a..b", ".hidden", "-x", "a b", "x" * 101, "/abs"])
def test_bad_package_ids_are_rejected(value: str) -> None:
    with pytest.raises(Rejected, match="package id"):
        check_package_id(value)


@pytest.mark.parametrize("value", ["", "1..2", "1/2", "../1", " 1"])
def test_bad_versions_are_rejected(value: str) -> None:
    with pytest.raises(Rejected, match="package version"):
        check_version(value)


@pytest.mark.parametrize("value", ["../x.zip", "a/b.txt", ".env", "x\n.txt", "a..b"])
def test_bad_file_names_are_rejected(value: str) -> None:
    with pytest.raises(Rejected, match="file name"):
        check_file_name(value)


def test_archives_are_known_by_their_suffix() -> None:
    assert [is_archive(n) for n in ("a.zip", "a.TAR.GZ", "a.tgz", "a.tar", "a.txt")] == [
        True, True, True, False, False]


def test_a_pushed_package_is_recorded_with_its_hash_and_found_again(app: Shoal) -> None:
    before = head(app)
    package = push(app)
    assert [type(e).__name__ for e in events_after(app, before)] == ["Pushed"]
    again = replay(app, package.id)
    assert (again.package_id, again.package_version, again.sha256, again.size, again.file_name) == (
        "app", "1.0.0", SHA, 10, "app.tgz")
    assert again.version == 1  # the aggregate's own version is untouched
    assert app.resolve_packages([("app", "1.0.0")]) == (PackageRef("app", "1.0.0", SHA, "app.tgz"),)


def test_a_version_is_pushed_once(app: Shoal) -> None:
    push(app)
    with pytest.raises(Conflict, match=r"package app version 1\.0\.0 already exists"):
        push(app)
    push(app, version="1.0.1")


def test_an_unknown_package_is_named(app: Shoal) -> None:
    push(app)
    with pytest.raises(NotFound, match="package app version 9 was not pushed"):
        app.resolve_packages([("app", "1.0.0"), ("app", "9")])


def script_step(packages: tuple[tuple[str, str], ...]) -> Step:
    return Step(name="s", action=Action.SCRIPT, syntax=Syntax.BASH, script_body="true", packages=packages)


def test_a_script_step_may_list_packages() -> None:
    (step,) = check_process((script_step((("app", "1.0"), ("tools", "2"))),))
    assert step.packages == (("app", "1.0"), ("tools", "2"))


@pytest.mark.parametrize(("packages", "message"), [
    ((("../app", "1"),), "package id"),
    ((("app", "1/2"),), "package version"),
    ((("app", "1"), ("app", "2")), "listed twice"),
    (tuple((f"p{i}", "1") for i in range(21)), "at most 20 packages"),
])
def test_bad_package_lists_are_rejected(packages: tuple[tuple[str, str], ...], message: str) -> None:
    with pytest.raises(Rejected, match=message):
        check_process((script_step(packages),))


def test_only_script_steps_take_packages() -> None:
    step = Step(name="m", action=Action.MANUAL_INTERVENTION, instructions="ok", packages=(("a", "1"),))
    with pytest.raises(Rejected, match="takes no worker_pool_id, script_body or packages"):
        check_process((step,))


# -- artifact names and the task ----------------------------------------------------------


@pytest.mark.parametrize(("name", "problem"), [
    ("out.txt", None),
    ("report 1.json", None),
    ("../x", "'..' is not allowed"),
    ("a..b", "'..' is not allowed"),
    ("/etc/passwd", "absolute paths are not allowed"),
    ("a/b", "'/' is not allowed"),
    ("a\\b", "'/' is not allowed"),
    ("", "the name is empty"),
    (".", "'.' is not a file name"),
    ("x\ny", "control characters"),
    ("x" * 201, "longer than 200 bytes"),
])
def test_artifact_names(name: str, problem: str | None) -> None:
    found = name_problem(name)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_artifacts_are_recorded_while_the_step_runs_and_replace_by_name(app: Shoal) -> None:
    task_id, worker_id, token = assigned(app)
    _, refused = app.apply_reports(task_id, worker_id, [
        StepReport(STEP, token, "started", pid=1),
        StepReport(STEP, token, "artifact", name="out.txt", size=3, sha256=SHA),
        StepReport(STEP, token, "artifact", name="out.txt", size=4, sha256="cd" * 32),
        StepReport(STEP, token, "finished", outcome="success", exit_code=0),
        StepReport(STEP, token, "artifact", name="late.txt", size=1, sha256=SHA),
    ], actor=agent(worker_id))
    task = replay(app, task_id)
    assert isinstance(task, Task)
    assert task.artifacts == {STEP: {"out.txt": (4, "cd" * 32)}}
    assert len(refused) == 1 and "late.txt" not in str(task.artifacts)


def test_a_bad_artifact_name_is_refused_by_the_task(app: Shoal) -> None:
    task_id, worker_id, token = assigned(app)
    _, refused = app.apply_reports(task_id, worker_id, [
        StepReport(STEP, token, "artifact", name="../x", size=1, sha256=SHA)], actor=agent(worker_id))
    assert refused and "'..' is not allowed" in refused[0]
    assert app.get_task(task_id).artifacts == {}


def test_the_built_in_worker_records_artifacts_only_for_running_steps(app: Shoal) -> None:
    task_id, _worker, _token = assigned(app)
    app.store_artifact(task_id, STEP, "a.txt", 1, SHA, actor=ALICE)
    app.update_task(task_id, lambda t: t.finish_step(STEP, StepState.SUCCESS, 0, "", ALICE))
    with pytest.raises(InvalidTransition, match="already ended"):
        app.store_artifact(task_id, STEP, "b.txt", 1, SHA, actor=ALICE)


def test_artifact_reports_round_trip() -> None:
    part = Report("w", "t", "s", 3, "artifact", 4, name="a.txt", data="aGk=")
    manifest = Report("w", "t", "s", 3, "artifact", 5, name="a.txt", size=2, sha256=SHA, parts=(7,))
    assert decode_report(encode(part)) == part and not part.is_manifest
    assert decode_report(encode(manifest)) == manifest and manifest.is_manifest
