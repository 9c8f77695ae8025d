"""The orjson transcoder: every value an event holds comes back with its type."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.actors import SYSTEM, Actor, ActorKind
from domain.app import Shoal
from domain.codec import OrjsonTranscoder
from domain.keys import Permission
from domain.policies import CleanUp, Connectivity
from domain.workers import CommsStyle, HealthStatus, Worker
from tests.sshworkers import SSH
from tests.unit.support import ALICE, events_after, head

codec = OrjsonTranscoder()
U = UUID("12345678-1234-5678-1234-567812345678")
WHEN = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def round_trip(value: Any) -> Any:
    return codec.decode(codec.encode(value))


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (1 == 1.0 == True is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    return bool(a == b)


VALUES = {
    "str": "héllo ✓",
    "int": 42,
    "big-int": 2**62,
    "float": 1.5,
    "bool": True,
    "none": None,
    "uuid": U,
    "datetime-utc": WHEN,
    "datetime-offset": datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    "datetime-naive": datetime(2025, 1, 1, 12, 0, 0),
    "decimal": Decimal("12.340"),
    "comms-style": CommsStyle.SSH,
    "health-status": HealthStatus.HAS_WARNINGS,
    "permission": Permission.PACKAGE_PUSH,
    "connectivity": Connectivity.MAY_BE_OFFLINE,
    "cleanup": CleanUp.DELETE_UNAVAILABLE,
    "actor-kind": ActorKind.AGENT,
    "actor": ALICE,
    "system-actor": SYSTEM,
    "tuple": (1, "a", U),
    "empty-tuple": (),
    "nested-tuple": ((1, 2), (U,)),
    "list": [1, "a", U],
    "frozenset-uuids": frozenset({U, uuid4(), uuid4()}),
    "frozenset-permissions": frozenset({Permission.TASK_VIEW, Permission.ADMINISTER}),
    "empty-frozenset": frozenset(),
    "frozenset-of-tuples": frozenset({(1, U), (2, U)}),
    "tuple-of-enums": (Permission.TASK_VIEW, Permission.WORKER_VIEW),
    "dict": {"a": 1, "b": [U, WHEN]},
    "nested-dict": {"outer": {"inner": {"when": WHEN, "ids": (U,), "who": ALICE}}},
    "list-of-dicts": [{"id": U}, {"style": CommsStyle.LISTENING}],
}


@pytest.mark.parametrize("value", VALUES.values(), ids=list(VALUES))
def test_round_trip_keeps_value_and_type(value: Any) -> None:
    out = round_trip(value)

    assert same(out, value), f"{value!r} came back as {out!r}"


def test_a_tz_aware_datetime_keeps_its_offset() -> None:
    value = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))

    assert round_trip(value).utcoffset() == timedelta(hours=2)


def test_an_actor_comes_back_as_an_actor_with_an_enum_kind() -> None:
    out = round_trip({"actor": ALICE})["actor"]

    assert isinstance(out, Actor)
    assert out.kind is ActorKind.USER


USER_DICTS = {
    "marker-only": {"_type_": "uuid"},
    "tag-shaped": {"_type_": "uuid", "_data_": "not-a-uuid"},
    "tag-shaped-dict-kind": {"_type_": "dict", "_data_": {"x": 1}},
    "marker-none": {"_type_": None, "other": 1},
    "marker-with-typed-values": {"_type_": "x", "id": U, "when": WHEN},
    "nested-markers": {"_type_": "a", "_data_": {"_type_": "b", "_data_": [1]}},
    "marker-in-list": [{"_type_": "tuple", "_data_": [1, 2]}],
    "data-key-only": {"_data_": 1},
}


@pytest.mark.parametrize("value", USER_DICTS.values(), ids=list(USER_DICTS))
def test_a_user_dict_holding_the_marker_key_round_trips_unchanged(value: Any) -> None:
    assert same(round_trip(value), value)


class Colour(Enum):
    RED = "red"


@dataclass(frozen=True)
class Point:
    x: int


class CommsStyleImpostor(str, Enum):
    """Same class name as a registered enum, but not that enum."""

    SSH = "ssh"


CommsStyleImpostor.__name__ = "CommsStyle"


@pytest.mark.parametrize(
    "value",
    [
        Colour.RED,
        {"nested": [Colour.RED]},
        CommsStyleImpostor.SSH,
        Point(1),
        object(),
        {1, 2},
        b"bytes",
        {U: "uuid keys"},
    ],
    ids=[
        "unregistered-enum", "nested-unregistered-enum", "enum-with-a-registered-name",
        "unregistered-dataclass", "object", "set", "bytes", "non-str-key",
    ],
)
def test_encoding_an_unsupported_value_raises_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        codec.encode(value)


def test_the_application_stores_events_with_this_codec(app: Shoal) -> None:
    before = head(app)
    app.register_worker(
        name="w1", pool_ids=(app.default_pool_id(),), comms_style=CommsStyle.SSH, ssh=SSH,
        actor=ALICE,
    )

    registered = [e for e in events_after(app, before) if isinstance(e, Worker.Registered)]

    assert len(registered) == 1
    event = registered[0]
    assert same(event.pool_ids, (app.default_pool_id(),))
    assert event.comms_style is CommsStyle.SSH
    assert event.timestamp.tzinfo is not None
