"""Where a step runs: every combination of the step's pool, the target's pool, members and
built-in switch, checked against a small oracle written here from the product's rules (not
from route())."""

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
TARGET = UUID(int=3)
POOL_NAMES = {DEFAULT: "Default Worker Pool", OTHER: "Build Pool", TARGET: "Target Pool"}


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

# The pool the step names, if any.
STEP_POOLS: dict[str, UUID | None] = {"step-none": None, "step-default": DEFAULT, "step-other": OTHER}
# The default worker pool of the target the execution is on behalf of, if any (None also
# covers "no target at all": route() cannot tell the two apart).
TARGET_POOLS: dict[str, UUID | None] = {
    "target-none": None, "target-default": DEFAULT, "target-other": TARGET,
}
POOL_CASES = list(itertools.product(STEP_POOLS, TARGET_POOLS))


@dataclass(frozen=True)
class Expected:
    kind: type
    pool_id: UUID
    workers: frozenset[UUID] = frozenset()  # RunOnWorker: the least busy, any in turn
    words: tuple[str, ...] = ()  # Wait/Refuse: what the reason must say


def able(c: Candidate) -> bool:
    routable = c.health in (H.HEALTHY, H.HAS_WARNINGS, H.UNKNOWN)
    return (not c.is_disabled) and routable and c.online and c.running < c.capacity


def oracle(step_pool: UUID | None, target_pool: UUID | None, members: tuple[Candidate, ...],
           built_in: bool) -> Expected:
    # A pool named by the step always wins; else the target's; else the default.
    if step_pool is not None:
        pool = step_pool
    elif target_pool is not None:
        pool = target_pool
    else:
        pool = DEFAULT
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


CASES = list(itertools.product(STEP_POOLS, TARGET_POOLS, MEMBER_SETS, (True, False), (0, 1, 2, 7)))


def expect(step: str, target: str, members: str, built_in: bool) -> Expected:
    return oracle(STEP_POOLS[step], TARGET_POOLS[target], MEMBER_SETS[members], built_in)


def call(step: str, target: str, members: tuple[Candidate, ...], built_in: bool, turn: int = 0):
    step_pool, target_pool = STEP_POOLS[step], TARGET_POOLS[target]
    pool_name = POOL_NAMES[resolve_pool(step_pool, DEFAULT, target_pool)]
    return route(step_pool_id=step_pool, default_pool_id=DEFAULT, pool_name=pool_name, members=members,
                 built_in_enabled=built_in, turn=turn, target_pool_id=target_pool)


@pytest.mark.parametrize(("step", "target", "members", "built_in", "turn"), CASES,
                         ids=[f"{s}-{t}-{m}-builtin_{'on' if b else 'off'}-turn{n}"
                              for s, t, m, b, n in CASES])
def test_route_matches_the_rule(step: str, target: str, members: str, built_in: bool, turn: int) -> None:
    expected = expect(step, target, members, built_in)

    got = call(step, target, MEMBER_SETS[members], built_in, turn)

    assert type(got) is expected.kind, got
    assert got.pool_id == expected.pool_id
    if isinstance(got, RunOnWorker):
        assert got.worker_id in expected.workers
        chosen = next(c for c in MEMBER_SETS[members] if c.worker_id == got.worker_id)
        assert got.worker_name == chosen.name
        # The agent is told the capacity the server has for it now (it may have changed).
        assert got.capacity == chosen.capacity
    if isinstance(got, Wait | Refuse):
        for word in expected.words:
            assert word in got.reason, (word, got.reason)


@pytest.mark.parametrize(("step", "target", "members", "built_in"),
                         list(itertools.product(STEP_POOLS, TARGET_POOLS, MEMBER_SETS, (True, False))))
def test_built_in_only_for_an_empty_default_pool(step: str, target: str, members: str,
                                                 built_in: bool) -> None:
    got = call(step, target, MEMBER_SETS[members], built_in)

    lands_in_default = step == "step-default" or (step == "step-none" and target != "target-other")
    assert isinstance(got, RunOnBuiltIn) == (lands_in_default and not MEMBER_SETS[members] and built_in)


@pytest.mark.parametrize(("step", "members", "built_in", "turn"),
                         list(itertools.product(STEP_POOLS, MEMBER_SETS, (True, False), (0, 3))))
def test_omitting_the_target_pool_is_the_rule_as_before(step: str, members: str, built_in: bool,
                                                        turn: int) -> None:
    step_pool = STEP_POOLS[step]
    pool_name = POOL_NAMES[resolve_pool(step_pool, DEFAULT)]

    got = route(step_pool_id=step_pool, default_pool_id=DEFAULT, pool_name=pool_name,
                members=MEMBER_SETS[members], built_in_enabled=built_in, turn=turn)

    assert got == call(step, "target-none", MEMBER_SETS[members], built_in, turn)


@pytest.mark.parametrize(("step", "target"), POOL_CASES)
def test_the_table_covers_every_outcome(step: str, target: str) -> None:
    kinds = {expect(step, target, m, b).kind for m in MEMBER_SETS for b in (True, False)}

    in_default = step == "step-default" or (step == "step-none" and target != "target-other")
    assert kinds == ({RunOnBuiltIn, RunOnWorker, Wait, Refuse} if in_default else {RunOnWorker, Wait})


TIED = {
    m: oracle(DEFAULT, None, MEMBER_SETS[m], True).workers for m in ("one-free", "mix-least-busy", "mix-tied")
}


@pytest.mark.parametrize("members", list(TIED))
def test_turns_cycle_through_the_tied_workers(members: str) -> None:
    n = len(TIED[members])

    chosen = [call("step-other", "target-none", MEMBER_SETS[members], True, t).worker_id
              for t in range(2 * n)]

    assert set(chosen[:n]) == TIED[members]
    assert chosen[n:] == chosen[:n]


@pytest.mark.parametrize("turn", range(4))
def test_tie_order_does_not_depend_on_member_order(turn: int) -> None:
    members = MEMBER_SETS["mix-tied"]

    forward = call("step-other", "target-none", members, True, turn)
    backward = call("step-other", "target-none", tuple(reversed(members)), True, turn)

    assert forward == backward


def test_a_mix_with_a_free_worker_runs_on_the_least_busy() -> None:
    got = call("step-none", "target-none", MEMBER_SETS["mix-least-busy"], True)

    assert got == RunOnWorker(DEFAULT, UUID(int=104), "w4", 4)


def test_refuse_says_how_to_get_going_again() -> None:
    got = call("step-none", "target-none", (), False)

    assert isinstance(got, Refuse)
    assert "enable the built-in worker" in got.reason


@pytest.mark.parametrize(("step_pool", "resolved"), [(None, DEFAULT), (OTHER, OTHER), (DEFAULT, DEFAULT)])
def test_resolve_pool_uses_the_step_pool_else_the_default(step_pool: UUID | None, resolved: UUID) -> None:
    assert resolve_pool(step_pool, DEFAULT) == resolved


@pytest.mark.parametrize(
    ("step_pool", "target_pool", "resolved"),
    [
        (None, None, DEFAULT),
        (None, DEFAULT, DEFAULT),
        (None, TARGET, TARGET),
        (DEFAULT, None, DEFAULT),
        (DEFAULT, TARGET, DEFAULT),
        (OTHER, None, OTHER),
        (OTHER, DEFAULT, OTHER),
        (OTHER, TARGET, OTHER),
    ],
)
def test_resolve_pool_step_pool_wins_then_target_pool_then_default(
    step_pool: UUID | None, target_pool: UUID | None, resolved: UUID
) -> None:
    assert resolve_pool(step_pool, DEFAULT, target_pool) == resolved


# The extended rule, case by case.


def test_a_step_naming_no_pool_runs_in_the_target_pool() -> None:
    got = call("step-none", "target-other", MEMBER_SETS["one-free"], True)

    assert got == RunOnWorker(TARGET, UUID(int=101), "w1", 2)


def test_a_pool_named_by_the_step_wins_over_the_target_pool() -> None:
    got = call("step-other", "target-other", MEMBER_SETS["one-free"], True)

    assert got == RunOnWorker(OTHER, UUID(int=101), "w1", 2)


def test_a_step_naming_the_default_pool_wins_over_the_target_pool() -> None:
    got = call("step-default", "target-other", (), True)

    assert got == RunOnBuiltIn(DEFAULT)


@pytest.mark.parametrize("built_in", [True, False])
def test_an_empty_target_pool_waits_and_never_uses_the_built_in_worker(built_in: bool) -> None:
    got = call("step-none", "target-other", (), built_in)

    assert isinstance(got, Wait)
    assert got.pool_id == TARGET
    assert "Target Pool" in got.reason


def test_a_target_pool_that_is_the_default_pool_behaves_like_the_default_pool() -> None:
    assert call("step-none", "target-default", (), True) == RunOnBuiltIn(DEFAULT)
    refused = call("step-none", "target-default", (), False)
    assert isinstance(refused, Refuse)
    assert refused == call("step-none", "target-none", (), False)


def test_a_target_pool_with_no_able_workers_waits_rather_than_using_the_built_in_worker() -> None:
    got = call("step-none", "target-other", MEMBER_SETS["only-offline"], True)

    assert isinstance(got, Wait)
    assert got.pool_id == TARGET
    assert "offline" in got.reason


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
