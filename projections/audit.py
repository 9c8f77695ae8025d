"""Audit log: every event, in log order, with who caused it. Secrets never reach it."""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import orjson

from domain.actors import Actor
from domain.tasklog import is_log_event
from projections.base import Projection, iso
from projections.sql import Cursor, Database

# Event fields that hold secrets (or their hashes): kept out of the audit log.
REDACTED_FIELDS = frozenset({"secret_hash", "private_key", "private_key_sealed", "password"})
REDACTED = "[redacted]"
_BASE_FIELDS = ("originator_id", "originator_version", "timestamp", "originator_topic", "actor")


def event_type(event: Any) -> str:
    """``Aggregate.Event`` form of an event's class name, e.g. ``WorkerPool.Created``."""
    return type(event).__qualname__


def _redact(value: Any) -> Any:
    # Secrets can sit inside records (an SMTP password in its settings), so look deep.
    if is_dataclass(value) and not isinstance(value, type) and not isinstance(value, Actor):
        value = {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, dict):
        return {k: (REDACTED if k in REDACTED_FIELDS and v is not None else _redact(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def event_data(event: Any) -> dict[str, Any]:
    """An event's own fields, secrets redacted at any depth."""
    data: dict[str, Any] = _redact(
        {k: v for k, v in vars(event).items() if k not in _BASE_FIELDS}
    )
    return data


def _json_default(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(str(v) for v in value)
    if isinstance(value, Actor):
        return value.as_dict()
    raise TypeError(f"{type(value).__qualname__} is not JSON serialisable")


def to_json(value: Any) -> str:
    """JSON text of event data (UUIDs, datetimes and enums as strings)."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


# How a field that must be redacted shows in JSON text: as a key. A value that merely
# contains such text (a script printing '"password":') only sends the event the slow way.
_SECRET_KEYS = tuple(f'"{name}":'.encode() for name in REDACTED_FIELDS)


def data_json(event: Any) -> str:
    """``to_json(event_data(event))``, without walking the event in Python when no field
    that must be redacted is anywhere in it (nearly every event): orjson writes records
    as their fields, exactly as the walk does, so both give the same text."""
    plain = {k: v for k, v in vars(event).items() if k not in _BASE_FIELDS}
    text = orjson.dumps(plain, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    if any(key in text for key in _SECRET_KEYS):
        return to_json(_redact(plain))
    return text.decode()


class AuditLog(Projection):
    """One row per event of every aggregate."""

    name = "audit"
    tables = {  # noqa: RUF012
        "rm_audit": (
            "position BIGINT PRIMARY KEY, type TEXT NOT NULL, aggregate_id TEXT NOT NULL, "
            "aggregate_version INTEGER NOT NULL, timestamp TEXT NOT NULL, actor TEXT NOT NULL, "
            "data TEXT NOT NULL"
        )
    }
    indexes = ("CREATE INDEX IF NOT EXISTS rm_audit_type ON rm_audit (type, position)",)

    def process(self, event: Any, position: int, cur: Cursor) -> None:
        """Every change is audited, so there is no per-type handler table. Log lines are
        data, not changes: they have their own read model."""
        if is_log_event(event):
            return
        actor = getattr(event, "actor", None)
        cur.execute(
            "INSERT INTO rm_audit VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                position,
                event_type(event),
                str(event.originator_id),
                event.originator_version,
                iso(event.timestamp),
                to_json(actor.as_dict() if isinstance(actor, Actor) else None),
                data_json(event),
            ),
        )


@dataclass(frozen=True)
class AuditPage:
    """A page of the audit log and where the next one starts."""

    items: list[dict[str, Any]]
    next: int | None


def read_events(
    db: Database, *, after: int = 0, limit: int = 100, type: str | None = None
) -> AuditPage:
    """Events after position ``after``, oldest first, optionally of one type."""
    params: list[Any] = [after]
    clause = "position > ?"
    if type is not None:
        clause += " AND type = ?"
        params.append(type)
    with db.read() as cur:
        cur.execute(
            "SELECT position, type, aggregate_id, aggregate_version, timestamp, actor, data "
            f"FROM rm_audit WHERE {clause} ORDER BY position LIMIT ?",
            (*params, limit + 1),
        )
        rows = cur.fetchall()
    items = [
        {
            "position": r[0],
            "type": r[1],
            "aggregate_id": r[2],
            "aggregate_version": r[3],
            "timestamp": r[4],
            "actor": orjson.loads(r[5]),
            "data": orjson.loads(r[6]),
        }
        for r in rows[:limit]
    ]
    return AuditPage(items, items[-1]["position"] if len(rows) > limit else None)
