"""What a projection is: named tables, a version, and one handler per event type."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from projections.sql import Cursor, Row

Handler = Callable[[Any, Any, int, Cursor], None]


class Projection:
    """Turns events into rows. Subclasses declare tables and register handlers with
    ``@handles(EventClass)``; events without a handler are skipped.

    Handlers run inside the runner's batch transaction and must only depend on the
    events (never on the clock or other tables' state outside this projection), so a
    replay from position 0 gives the same rows.
    """

    name: ClassVar[str]
    # Bump when the tables or handlers change meaning: the runner then rebuilds.
    version: ClassVar[int] = 1
    # table name -> column definitions (portable DDL).
    tables: ClassVar[dict[str, str]]
    indexes: ClassVar[tuple[str, ...]] = ()
    _handlers: ClassVar[dict[type, Handler]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Inherited handlers count too (a subclass that only bumps ``version`` must still
        # handle every event); a method overridden by name replaces its parent's.
        cls._handlers = {}
        for klass in reversed(cls.__mro__):
            for attr_name, attr in list(vars(klass).items()):
                for event_class in getattr(attr, "_handles", ()):
                    cls._handlers[event_class] = getattr(cls, attr_name)

    def handler_for(self, event_class: type) -> Handler | None:
        """The handler for an event class (looked up once per class and cached)."""
        handlers = type(self)._handlers
        if event_class in handlers:
            return handlers[event_class]
        for base in event_class.__mro__[1:]:
            if base in handlers:
                handlers[event_class] = handlers[base]
                return handlers[base]
        handlers[event_class] = _skip
        return _skip

    def process(self, event: Any, position: int, cur: Cursor) -> None:
        """Apply one event at ``position``."""
        handler = self.handler_for(type(event))
        if handler is not _skip and handler is not None:
            handler(self, event, position, cur)

    def create(self, cur: Cursor) -> None:
        """Create the tables (idempotent)."""
        for table, columns in self.tables.items():
            cur.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
        for index in self.indexes:
            cur.execute(index)

    def drop(self, cur: Cursor) -> None:
        """Drop the tables, for a rebuild."""
        for table in self.tables:
            cur.execute(f"DROP TABLE IF EXISTS {table}")

    def dump(self, cur: Cursor) -> dict[str, list[Row]]:
        """Every row of every table in a stable order, to compare two builds."""
        out: dict[str, list[Row]] = {}
        for table in self.tables:
            cur.execute(f"SELECT * FROM {table}")
            out[table] = sorted(cur.fetchall(), key=repr)
        return out


def _skip(self: Any, event: Any, position: int, cur: Cursor) -> None:
    return None


def handles(*event_classes: type) -> Callable[[Handler], Handler]:
    """Register the decorated method as the handler for these event classes."""

    def mark(fn: Handler) -> Handler:
        fn._handles = event_classes  # type: ignore[attr-defined]
        return fn

    return mark


def iso(ts: datetime) -> str:
    """Timestamps are stored as ISO 8601 text on both engines."""
    return ts.isoformat()
