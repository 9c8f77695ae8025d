"""orjson transcoder for the event store.

orjson writes UUIDs, datetimes and enums as bare strings, which would come back as
strings. Events must keep their types across a round trip, so values whose type JSON
cannot carry are written as ``{"_type_": name, "_data_": value}`` and turned back on
decode. Plugged into every Application through ``TRANSCODER_TOPIC``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Transcoder

from domain.actors import Actor, ActorKind

_TYPE = "_type_"
_DATA = "_data_"

# Enums and frozen dataclasses that may appear in event fields, by a stable name.
_ENUMS: dict[str, type[Enum]] = {}
_RECORDS: dict[str, type[Any]] = {}


def register_enum(cls: type[Enum]) -> type[Enum]:
    """Let events carry this enum; the class name is its stored name, so keep it stable."""
    _ENUMS[cls.__name__] = cls
    return cls


def register_record(cls: type[Any]) -> type[Any]:
    """Let events carry this frozen dataclass (stored by class name, field by field)."""
    _RECORDS[cls.__name__] = cls
    return cls


register_enum(ActorKind)
register_record(Actor)


def _tag(obj: Any) -> Any:
    # Exact-type checks first: they are the hot path and cheaper than isinstance chains.
    t = type(obj)
    if t is str or t is int or t is float or t is bool or obj is None:
        return obj
    if t is dict:
        tagged = {k: _tag(v) for k, v in obj.items()}
        # A user's dict that happens to hold our marker key is wrapped so it is not
        # mistaken for a tagged value on the way back.
        return {_TYPE: "dict", _DATA: tagged} if _TYPE in obj else tagged
    if t is list:
        return [_tag(v) for v in obj]
    if t is UUID:
        return {_TYPE: "uuid", _DATA: obj.hex}
    if t is datetime:
        return {_TYPE: "datetime", _DATA: obj.isoformat()}
    if t is tuple:
        return {_TYPE: "tuple", _DATA: [_tag(v) for v in obj]}
    if t is frozenset:
        return {_TYPE: "frozenset", _DATA: sorted((_tag(v) for v in obj), key=repr)}
    if t is Decimal:
        return {_TYPE: "decimal", _DATA: str(obj)}
    if isinstance(obj, Enum):
        name = t.__name__
        if _ENUMS.get(name) is not t:
            raise TypeError(f"enum {name} is not registered with the codec")
        return {_TYPE: "enum", _DATA: [name, obj.value]}
    if is_dataclass(obj) and not isinstance(obj, type):
        name = t.__name__
        if _RECORDS.get(name) is not t:
            raise TypeError(f"record {name} is not registered with the codec")
        return {_TYPE: "record", _DATA: [name, {f.name: _tag(getattr(obj, f.name)) for f in fields(obj)}]}
    raise TypeError(f"cannot store a value of type {t.__qualname__} in an event")


def _decode_record(data: Any) -> Any:
    name, values = data
    return _RECORDS[name](**{k: _untag(v) for k, v in values.items()})


def _decode_enum(data: Any) -> Any:
    name, value = data
    return _ENUMS[name](value)


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "uuid": UUID,
    "datetime": datetime.fromisoformat,
    "tuple": lambda d: tuple(_untag(v) for v in d),
    "frozenset": lambda d: frozenset(_untag(v) for v in d),
    "decimal": Decimal,
    "enum": _decode_enum,
    "record": _decode_record,
    "dict": lambda d: {k: _untag(v) for k, v in d.items()},
}


def _untag(obj: Any) -> Any:
    t = type(obj)
    if t is dict:
        kind = obj.get(_TYPE)
        if kind is not None and len(obj) == 2:
            return _DECODERS[kind](obj[_DATA])
        return {k: _untag(v) for k, v in obj.items()}
    if t is list:
        return [_untag(v) for v in obj]
    return obj


class OrjsonTranscoder(Transcoder):
    """Transcoder for eventsourcing that keeps types and uses orjson for speed."""

    def encode(self, obj: Any) -> bytes:
        """Event state to bytes."""
        return orjson.dumps(_tag(obj))

    def decode(self, data: bytes) -> Any:
        """Bytes back to event state, with the original types."""
        return _untag(orjson.loads(data))


TOPIC = "domain.codec:OrjsonTranscoder"
