"""Concurrent commands: the event store decides races, and the loser is told."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import RecordConflictError

from domain.app import Shoal
from domain.app.base import MAX_ATTEMPTS, command
from domain.errors import Conflict, Rejected
from domain.workers import CommsStyle
from tests.unit.support import ALICE, events_after

THREADS = 8


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released together; each one's result or exception."""
    barrier = threading.Barrier(len(calls), timeout=10)
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as e:  # the test inspects every outcome
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a racing command hung"
    return results


def split(results: list[Any]) -> tuple[list[Any], list[Exception]]:
    wins = [r for r in results if not isinstance(r, Exception)]
    losses = [r for r in results if isinstance(r, Exception)]
    return wins, losses


CREATES = {
    "pool": lambda app, n: app.create_pool(name=n, actor=ALICE),
    "policy": lambda app, n: app.create_policy(name=n, actor=ALICE),
    "worker": lambda app, n: app.register_worker(
        name=n, pool_ids=(app.default_pool_id(),), comms_style=CommsStyle.POLLING, actor=ALICE
    ),
}


@pytest.mark.parametrize("create", CREATES.values(), ids=list(CREATES))
def test_racing_creates_of_one_name_let_exactly_one_win(app: Shoal, create: Callable[..., Any]) -> None:
    names = ["Race", "race", "RACE", "Race "] * (THREADS // 4)

    wins, losses = split(race([partial(create, app, n) for n in names]))

    assert len(wins) == 1
    assert len(losses) == THREADS - 1
    assert all(isinstance(e, Conflict) for e in losses), losses


@pytest.mark.parametrize("create", CREATES.values(), ids=list(CREATES))
def test_the_racing_winner_owns_the_name(app: Shoal, create: Callable[..., Any]) -> None:
    kind = next(k for k, v in CREATES.items() if v is create)

    wins, _ = split(race([lambda: create(app, "Race")] * THREADS))

    assert app.owner_of(kind, "race") == wins[0].aggregate.id


def test_racing_registrations_into_one_pool_agree_with_its_members(app: Shoal) -> None:
    pool_id = app.create_pool(name="Busy", actor=ALICE).aggregate.id

    def register(n: int) -> UUID:
        return app.register_worker(
            name=f"w{n}", pool_ids=(pool_id,), comms_style=CommsStyle.POLLING, actor=ALICE
        ).aggregate.id

    wins, losses = split(race([partial(register, n) for n in range(THREADS)]))

    assert all(isinstance(e, Conflict) for e in losses), losses
    assert app.get_pool(pool_id).member_ids == frozenset(wins)


def test_racing_default_moves_leave_exactly_one_default(app: Shoal) -> None:
    ids = [app.create_pool(name=f"P{n}", actor=ALICE).aggregate.id for n in range(THREADS)]
    ids.append(app.default_pool_id())

    _, losses = split(
        race([partial(app.update_pool, i, is_default=True, actor=ALICE) for i in ids[:-1]])
    )

    assert all(isinstance(e, Conflict) for e in losses), losses
    assert [i for i in ids if app.get_pool(i).is_default] == [app.default_pool_id()]


def test_racing_creates_of_a_freed_name_let_exactly_one_win(app: Shoal) -> None:
    freed = app.create_pool(name="Race", actor=ALICE).aggregate.id
    app.delete_pool(freed, actor=ALICE)

    wins, losses = split(race([lambda: app.create_pool(name="race", actor=ALICE)] * THREADS))

    assert len(wins) == 1
    assert all(isinstance(e, Conflict) for e in losses), losses
    assert app.owner_of("pool", "Race") == wins[0].aggregate.id


def test_a_rename_racing_a_create_of_the_same_name_lets_one_win(app: Shoal) -> None:
    pool_id = app.create_pool(name="Old", actor=ALICE).aggregate.id
    calls = [
        lambda: app.update_pool(pool_id, name="Taken", actor=ALICE),
        lambda: app.create_pool(name="TAKEN", actor=ALICE),
    ] * (THREADS // 2)

    wins, losses = split(race(calls))

    assert all(isinstance(e, Conflict) for e in losses), losses
    owner = app.owner_of("pool", "taken")
    assert owner is not None
    assert [w.aggregate.id for w in wins] in ([pool_id] * (THREADS // 2), [owner])
    assert app.get_pool(owner).name.casefold() == "taken"


def test_racing_installs_install_once(fresh: Shoal) -> None:
    results = race([fresh.install] * THREADS)

    texts = [r for r in results if r is not None]
    assert len(texts) == 1, results
    assert fresh.authenticate(texts[0]) is not None


def test_racing_installs_write_one_installation(fresh: Shoal) -> None:
    race([fresh.install] * THREADS)

    installed = [e for e in events_after(fresh, 0) if type(e).__name__ == "Installed"]
    assert len(installed) == 1
    assert fresh.get_pool(fresh.default_pool_id()).is_default is True


def test_a_delete_racing_a_registration_never_strands_a_worker(app: Shoal) -> None:
    pool_id = app.create_pool(name="Doomed", actor=ALICE).aggregate.id
    calls: list[Callable[[], Any]] = [lambda: app.delete_pool(pool_id, actor=ALICE)]
    calls += [
        partial(
            app.register_worker,
            name=f"w{n}", pool_ids=(pool_id,), comms_style=CommsStyle.POLLING, actor=ALICE,
        )
        for n in range(THREADS - 1)
    ]

    results = race(calls)

    registered = [r.aggregate.id for r in results[1:] if not isinstance(r, Exception)]
    pool = app.aggregate_state(pool_id)
    if pool.is_deleted:
        assert registered == []
        assert all(isinstance(r, Rejected) for r in results[1:]), results
    else:
        assert isinstance(results[0], Conflict)
        assert pool.member_ids == frozenset(registered) != frozenset()


def flaky(failures: int) -> tuple[Callable[[], str], list[int]]:
    """A command that hits a concurrent write ``failures`` times, then succeeds."""
    calls: list[int] = []

    @command
    def run() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise RecordConflictError("version taken")
        return "done"

    return run, calls


@pytest.mark.parametrize("failures", range(MAX_ATTEMPTS))
def test_a_command_is_retried_after_a_concurrent_write(failures: int) -> None:
    run, calls = flaky(failures)

    assert run() == "done"
    assert len(calls) == failures + 1


def test_a_command_gives_up_with_conflict_after_max_attempts() -> None:
    run, calls = flaky(MAX_ATTEMPTS)

    with pytest.raises(Conflict):
        run()
    assert len(calls) == MAX_ATTEMPTS


def test_a_command_does_not_retry_other_errors() -> None:
    calls: list[int] = []

    @command
    def run() -> None:
        calls.append(1)
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        run()
    assert calls == [1]
