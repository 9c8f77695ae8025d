"""Server configuration: the built-in worker switch and user, and the mail server."""

from __future__ import annotations

import pytest

from domain.app import Shoal
from domain.configuration import CONFIGURATION_ID, Configuration, Smtp, check_run_as_user
from domain.errors import Rejected
from tests.unit.support import ALICE, BOB, events_after, head, replay, writes_nothing

SMTP = Smtp(host="mail.example.com", port=587, sender="shoal@example.com", starttls=True)


def test_defaults_before_any_change(app: Shoal) -> None:
    config = app.configuration()

    assert (config.built_in_enabled, config.run_as_user, config.smtp) == (True, None, None)


def test_reading_the_configuration_writes_nothing(app: Shoal) -> None:
    with writes_nothing(app):
        app.configuration()


@pytest.mark.parametrize("enabled", [False, True])
def test_switching_the_built_in_worker(app: Shoal, enabled: bool) -> None:
    app.configure_built_in_worker(enabled=not enabled, actor=ALICE)

    app.configure_built_in_worker(enabled=enabled, actor=ALICE)

    assert replay(app, CONFIGURATION_ID).built_in_enabled is enabled


def test_setting_the_run_as_user(app: Shoal) -> None:
    app.configure_built_in_worker(run_as_user="shoal-runner", actor=ALICE)

    config = replay(app, CONFIGURATION_ID)
    assert (config.built_in_enabled, config.run_as_user) == (True, "shoal-runner")


def test_switching_off_keeps_the_run_as_user(app: Shoal) -> None:
    app.configure_built_in_worker(run_as_user="shoal-runner", actor=ALICE)

    app.configure_built_in_worker(enabled=False, actor=ALICE)

    config = replay(app, CONFIGURATION_ID)
    assert (config.built_in_enabled, config.run_as_user) == (False, "shoal-runner")


def test_setting_the_user_keeps_the_switch(app: Shoal) -> None:
    app.configure_built_in_worker(enabled=False, actor=ALICE)

    app.configure_built_in_worker(run_as_user="deploy", actor=ALICE)

    config = replay(app, CONFIGURATION_ID)
    assert (config.built_in_enabled, config.run_as_user) == (False, "deploy")


def test_clearing_the_run_as_user(app: Shoal) -> None:
    app.configure_built_in_worker(run_as_user="shoal-runner", actor=ALICE)

    app.configure_built_in_worker(clear_run_as_user=True, actor=ALICE)

    assert replay(app, CONFIGURATION_ID).run_as_user is None


@pytest.mark.parametrize("user", ["root", "_svc", "deploy-1", "a" * 32, "machine$"])
def test_valid_user_names_are_accepted(user: str) -> None:
    assert check_run_as_user(user) == user


@pytest.mark.parametrize("user", [None, ""])
def test_no_user_means_the_server_user(user: str | None) -> None:
    assert check_run_as_user(user) is None


@pytest.mark.parametrize(
    "user",
    ["Root", "1abc", "-abc", "a" * 33, "bad name", "evil;rm", "a/b", "ab$c", "é"],
    ids=["upper", "digit-first", "dash-first", "too-long", "space", "semicolon", "slash", "dollar-inside",
         "non-ascii"],
)
def test_invalid_user_names_are_rejected(app: Shoal, user: str) -> None:
    with writes_nothing(app), pytest.raises(Rejected, match="is not a valid user name"):
        app.configure_built_in_worker(run_as_user=user, actor=ALICE)


def test_a_change_records_one_event_with_its_actor(app: Shoal) -> None:
    app.configure_built_in_worker(enabled=False, actor=ALICE)
    before = head(app)

    app.configure_built_in_worker(enabled=True, run_as_user="deploy", actor=BOB)

    (event,) = events_after(app, before)
    assert isinstance(event, Configuration.BuiltInWorkerConfigured)
    assert (event.enabled, event.run_as_user, event.actor) == (True, "deploy", BOB)


def test_an_unchanged_built_in_setting_records_no_event(app: Shoal) -> None:
    app.configure_built_in_worker(enabled=False, run_as_user="deploy", actor=ALICE)

    with writes_nothing(app):
        app.configure_built_in_worker(enabled=False, run_as_user="deploy", actor=ALICE)


def test_a_no_op_before_any_change_records_no_event(app: Shoal) -> None:
    with writes_nothing(app):
        app.configure_built_in_worker(enabled=True, actor=ALICE)


def test_setting_smtp(app: Shoal) -> None:
    app.configure_smtp(smtp=SMTP, actor=ALICE)

    assert replay(app, CONFIGURATION_ID).smtp == SMTP


@pytest.mark.parametrize("port", [1, 65535])
def test_smtp_port_limits_are_accepted(app: Shoal, port: int) -> None:
    smtp = Smtp(host="mail", port=port, sender="a@b")

    app.configure_smtp(smtp=smtp, actor=ALICE)

    assert replay(app, CONFIGURATION_ID).smtp == smtp


@pytest.mark.parametrize(
    ("smtp", "message"),
    [
        (Smtp(host="", port=25, sender="a@b"), "host must not be empty"),
        (Smtp(host="   ", port=25, sender="a@b"), "host must not be empty"),
        (Smtp(host="mail", port=0, sender="a@b"), "port must be 1-65535"),
        (Smtp(host="mail", port=65536, sender="a@b"), "port must be 1-65535"),
        (Smtp(host="mail", port=-25, sender="a@b"), "port must be 1-65535"),
        (Smtp(host="mail", port=25, sender="shoal"), "'shoal' is not an email address"),
    ],
    ids=["empty-host", "blank-host", "port-zero", "port-too-big", "port-negative", "bad-sender"],
)
def test_bad_smtp_settings_are_rejected(app: Shoal, smtp: Smtp, message: str) -> None:
    app.configure_smtp(smtp=SMTP, actor=ALICE)

    with writes_nothing(app), pytest.raises(Rejected, match=message):
        app.configure_smtp(smtp=smtp, actor=ALICE)


def test_clearing_smtp(app: Shoal) -> None:
    app.configure_smtp(smtp=SMTP, actor=ALICE)

    app.configure_smtp(smtp=None, actor=ALICE)

    assert replay(app, CONFIGURATION_ID).smtp is None


def test_the_same_smtp_again_records_no_event(app: Shoal) -> None:
    app.configure_smtp(smtp=SMTP, actor=ALICE)

    with writes_nothing(app):
        app.configure_smtp(smtp=Smtp(host="mail.example.com", port=587, sender="shoal@example.com",
                                     starttls=True), actor=ALICE)


def test_clearing_smtp_that_is_not_set_records_no_event(app: Shoal) -> None:
    app.configure_built_in_worker(enabled=False, actor=ALICE)

    with writes_nothing(app):
        app.configure_smtp(smtp=None, actor=ALICE)


def test_smtp_and_built_in_settings_are_independent(app: Shoal) -> None:
    app.configure_built_in_worker(enabled=False, run_as_user="deploy", actor=ALICE)

    app.configure_smtp(smtp=SMTP, actor=ALICE)

    config = replay(app, CONFIGURATION_ID)
    assert (config.built_in_enabled, config.run_as_user, config.smtp) == (False, "deploy", SMTP)


def test_the_configuration_aggregate_starts_with_the_defaults() -> None:
    config = Configuration(actor=ALICE)

    assert (config.id, config.built_in_enabled, config.run_as_user, config.smtp) == (
        CONFIGURATION_ID, True, None, None)
