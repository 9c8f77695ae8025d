"""install(): the first start of a server sets up defaults and an administrator key."""

from __future__ import annotations

import pytest

from domain.app import DEFAULT_POOL_NAME, Shoal
from domain.app.pools import POOL
from domain.keys import Permission
from domain.policies import DEFAULT_HEALTH_SCRIPT, DEFAULT_POLICY_NAME, CleanUp, Connectivity
from tests.unit.support import ALICE, SaveSpy, events_after, head, writes_nothing


def test_a_fresh_store_is_not_installed(fresh: Shoal) -> None:
    assert fresh.is_installed() is False


def test_install_marks_the_store_installed(fresh: Shoal) -> None:
    fresh.install()

    assert fresh.is_installed() is True


def test_install_creates_the_default_worker_pool(fresh: Shoal) -> None:
    fresh.install()

    pool = fresh.get_pool(fresh.default_pool_id())
    assert (pool.name, pool.is_default, pool.member_ids) == (
        "Default Worker Pool",
        True,
        frozenset(),
    )


def test_the_default_pool_can_be_found_by_name(fresh: Shoal) -> None:
    fresh.install()

    assert fresh.resolve_pool(DEFAULT_POOL_NAME).id == fresh.default_pool_id()


def test_install_creates_the_default_machine_policy(fresh: Shoal) -> None:
    fresh.install()

    policy = fresh.get_policy(fresh.default_policy_id())
    assert policy.name == DEFAULT_POLICY_NAME == "Default Machine Policy"
    assert policy.health_check_script == DEFAULT_HEALTH_SCRIPT
    assert (policy.connectivity, policy.cleanup) == (Connectivity.EXPECTED_ONLINE, CleanUp.KEEP)


def test_the_default_policy_can_be_found_by_name(fresh: Shoal) -> None:
    fresh.install()

    assert fresh.resolve_policy("default machine policy").id == fresh.default_policy_id()


def test_install_returns_the_text_of_an_administer_key(fresh: Shoal) -> None:
    text = fresh.install()

    assert text is not None
    key = fresh.authenticate(text)
    assert key is not None
    assert key.permissions == (Permission.ADMINISTER,)


def test_install_writes_everything_in_one_save(fresh: Shoal) -> None:
    spy = SaveSpy(fresh)

    fresh.install()

    assert spy.positions == [head(fresh)]


def test_install_records_the_actor_it_was_given(fresh: Shoal) -> None:
    fresh.install(actor=ALICE)

    assert {e.actor for e in events_after(fresh, 0)} == {ALICE}


def test_a_second_install_returns_none(app: Shoal) -> None:
    assert app.install() is None


def test_a_second_install_writes_no_events(app: Shoal) -> None:
    with writes_nothing(app):
        app.install()


def test_a_second_install_keeps_the_first_admin_key_working(fresh: Shoal) -> None:
    text = fresh.install()
    assert text is not None

    fresh.install()

    assert fresh.authenticate(text) is not None


def test_install_reserves_the_default_pool_name(fresh: Shoal) -> None:
    fresh.install()

    assert fresh.owner_of(POOL, DEFAULT_POOL_NAME.upper()) == fresh.default_pool_id()


def lose_the_install_race(app: Shoal, monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Make another 'node' install right after this one found the store not installed.

    Returns a list that receives the other node's install() result.
    """
    real_check = app.is_installed
    winner: list[str | None] = []

    def check_then_lose() -> bool:
        answer = real_check()
        monkeypatch.setattr(app, "is_installed", real_check)
        winner.append(Shoal.install(app))
        return answer

    monkeypatch.setattr(app, "is_installed", check_then_lose)
    return winner


def test_an_install_that_loses_the_race_returns_none(
    fresh: Shoal, monkeypatch: pytest.MonkeyPatch
) -> None:
    lose_the_install_race(fresh, monkeypatch)

    assert fresh.install() is None


def test_an_install_that_loses_the_race_leaves_the_winners_install(
    fresh: Shoal, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = lose_the_install_race(fresh, monkeypatch)

    fresh.install()

    assert winner[0] is not None
    assert fresh.authenticate(winner[0]) is not None
    assert [type(e).__name__ for e in events_after(fresh, 0)].count("Installed") == 1
