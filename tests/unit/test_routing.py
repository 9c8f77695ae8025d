"""Where a step runs: every combination of pool, members and built-in switch, checked
against a small oracle written here from the product's two rules (not from route())."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from uuid import UUID

import pytest

from domain.routing import (
    Candidate,
    Refuse,
    RunOnBuiltIn,
    RunOnWorker,
    Wait,
    resolve_pool,
    route,
)
from domain.workers import HealthStatus

H = HealthStatus
DEFAULT = UUID(int=1)
OTHER = UUID(int=2)
POOL_NAMES = {DEFAULT: "Default Worker Pool", OTHER: "Build Pool"}


def member(n: int, health: H = H.HEALTHY, *, disabled: bool = False, cap: int = 2, running: int = 0,
           online: bool = True) -> Candidate:
    return Candidate(UUID(int=100 + n), f"w{n}", health, disabled, cap, running, online)


MEMBER_SETS: dict[str, tuple[Candidate, ...]] = {
    "none": (),
    "one-free": (member(1),),
    "only-disabled": (member(1, disabled=True), member(2, H.UNHEALTHY, disabled=True)),
    "only-unhealthy": (member(1, H.UNHEALTHY),),
    "only-unavailable": (member(1, H.UNAVAILABLE),),
    "only-at-capacity": (member(1, cap=1, running=1), member(2, cap=3, running=3)),
    "over-capacity": (member(1, cap=1, running=2),),
    "has-warnings": (member(1, H.HAS_WARNINGS),),
    "unknown-health": (member(1, H.UNKNOWN),),
    "only-offline": (member(1, online=False), member(2, H.UNKNOWN, online=False)),
    "offline-and-free": (member(1, online=False), member(2, running=1)),
    "mix-none-able": (member(1, disabled=True), member(2, H.UNAVAILABLE), member(3, cap=1, running=1)),
    "mix-least-busy": (
        member(1, disabled=True, running=0),
        member(2, H.UNHEALTHY, running=0),
        member(3, cap=4, running=3),
        member(4, H.HAS_WARNINGS, cap=4, running=1),
        member(5, cap=1, running=1),
    ),
    "mix-tied": (
        member(1, running=1),
        member(2, H.UNKNOWN, running=1),
        member(3, H.HAS_WARNINGS, running=1),
        member(4, running=2, cap=5),
        member(5, H.UNAVAILABLE, running=0),
        member(6, disabled=True, running=0),
    ),
}

# (step names a pool, that pool is the default). A step naming no pool resolves to the
# default, so (False, False) cannot happen.
POOL_CASES = {"no-pool-named": (False, True), "names-default": (True, True), "names-other": (True, False)}


@dataclass(frozen=True)
class Expected:
    kind: type
    pool_id: UUID
    workers: frozenset[UUID] = frozenset()  # RunOnWorker: the least busy, any in turn
    words: tuple[str, ...] = ()  # Wait/Refuse: what the reason must say


def able(c: Candidate) -> bool:
    routable = c.health in (H.HEALTHY, H.HAS_WARNINGS, H.UNKNOWN)
    return (not c.is_disabled) and routable and c.online and c.running < c.capacity


def oracle(step_pool: UUID | None, members: tuple[Candidate, ...], built_in: bool) -> Expected:
    pool = DEFAULT if step_pool is None else step_pool
    name = POOL_NAMES[pool]
    if not members:
        if pool != DEFAULT:
            return Expected(Wait, pool, words=(name,))
        if built_in:
            return Expected(RunOnBuiltIn, pool)
        return Expected(Refuse, pool, words=("disabled", "add a worker", name))
    free = [c for c in members if able(c)]
    if not free:
        why = set()
        for c in members:
            if c.is_disabled:
                why.add("disabled")
            elif c.health is H.UNHEALTHY:
                why.add("unhealthy")
            elif c.health is H.UNAVAILABLE:
                why.add("unavailable")
            elif not c.online:
                why.add("offline")
            else:
                why.add("at capacity")
        return Expected(Wait, pool, words=(name, *sorted(why)))
    fewest = min(c.running for c in free)
    return Expected(RunOnWorker, pool, workers=frozenset(c.worker_id for c in free if c.running == fewest))


def step_pool_for(names_pool: bool, is_default: bool) -> UUID | None:
    if not names_pool:
        return None
    return DEFAULT if is_default else OTHER


CASES = list(itertools.product(POOL_CASES, MEMBER_SETS, (True, False), (0, 1, 2, 7)))


def call(pool_case: str, members: tuple[Candidate, ...], built_in: bool, turn: int = 0):
    step_pool = step_pool_for(*POOL_CASES[pool_case])
    pool_name = POOL_NAMES[resolve_pool(step_pool, DEFAULT)]
    return route(step_pool_id=step_pool, default_pool_id=DEFAULT, pool_name=pool_name,
                 members=members, built_in_enabled=built_in, turn=turn)


@pytest.mark.parametrize(("pool_case", "members", "built_in", "turn"), CASES,
                         ids=[f"{p}-{m}-builtin_{'on' if b else 'off'}-turn{t}" for p, m, b, t in CASES])
def test_route_matches_the_rule(pool_case: str, members: str, built_in: bool, turn: int) -> None:
    expected = oracle(step_pool_for(*POOL_CASES[pool_case]), MEMBER_SETS[members], built_in)

    got = call(pool_case, MEMBER_SETS[members], built_in, turn)

    assert type(got) is expected.kind, got
    assert got.pool_id == expected.pool_id
    if isinstance(got, RunOnWorker):
        assert got.worker_id in expected.workers
        chosen = next(c for c in MEMBER_SETS[members] if c.worker_id == got.worker_id)
        assert got.worker_name == chosen.name
    if isinstance(got, Wait | Refuse):
        for word in expected.words:
            assert word in got.reason, (word, got.reason)


@pytest.mark.parametrize(("pool_case", "members", "built_in"),
                         list(itertools.product(POOL_CASES, MEMBER_SETS, (True, False))))
def test_built_in_only_for_an_empty_default_pool(pool_case: str, members: str, built_in: bool) -> None:
    got = call(pool_case, MEMBER_SETS[members], built_in)

    on_built_in = isinstance(got, RunOnBuiltIn)
    assert on_built_in == (POOL_CASES[pool_case][1] and not MEMBER_SETS[members] and built_in)


def test_the_table_covers_every_outcome() -> None:
    kinds = {oracle(step_pool_for(*POOL_CASES[p]), MEMBER_SETS[m], b).kind for p, m, b, _ in CASES}

    assert kinds == {RunOnBuiltIn, RunOnWorker, Wait, Refuse}


TIED = {m: oracle(DEFAULT, MEMBER_SETS[m], True).workers for m in ("one-free", "mix-least-busy", "mix-tied")}


@pytest.mark.parametrize("members", list(TIED))
def test_turns_cycle_through_the_tied_workers(members: str) -> None:
    n = len(TIED[members])

    chosen = [call("names-other", MEMBER_SETS[members], True, t).worker_id for t in range(2 * n)]

    assert set(chosen[:n]) == TIED[members]
    assert chosen[n:] == chosen[:n]


@pytest.mark.parametrize("turn", range(4))
def test_tie_order_does_not_depend_on_member_order(turn: int) -> None:
    members = MEMBER_SETS["mix-tied"]

    forward = call("names-other", members, True, turn)
    backward = call("names-other", tuple(reversed(members)), True, turn)

    assert forward == backward


def test_a_mix_with_a_free_worker_runs_on_the_least_busy() -> None:
    got = call("no-pool-named", MEMBER_SETS["mix-least-busy"], True)

    assert got == RunOnWorker(DEFAULT, UUID(int=104), "w4")


def test_refuse_says_how_to_get_going_again() -> None:
    got = call("no-pool-named", (), False)

    assert isinstance(got, Refuse)
    assert "enable the built-in worker" in got.reason


@pytest.mark.parametrize(("step_pool", "resolved"), [(None, DEFAULT), (OTHER, OTHER), (DEFAULT, DEFAULT)])
def test_resolve_pool_uses_the_step_pool_else_the_default(step_pool: UUID | None, resolved: UUID) -> None:
    assert resolve_pool(step_pool, DEFAULT) == resolved


@pytest.mark.parametrize(
    ("candidate", "can_take"),
    [
        (member(1), True),
        (member(1, H.HAS_WARNINGS), True),
        (member(1, H.UNKNOWN), True),
        (member(1, H.UNHEALTHY), False),
        (member(1, H.UNAVAILABLE), False),
        (member(1, disabled=True), False),
        (member(1, cap=2, running=1), True),
        (member(1, cap=2, running=2), False),
        (member(1, online=False), False),
    ],
    ids=["healthy", "warnings", "unknown", "unhealthy", "unavailable", "disabled", "one-free-slot", "full",
         "offline"],
)
def test_candidate_can_take(candidate: Candidate, can_take: bool) -> None:
    assert candidate.can_take is can_take
