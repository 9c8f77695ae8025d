"""The little SQL that read models need, as Protocols the adapters implement.

Statements are written once, with ``?`` placeholders and types that SQLite and
PostgreSQL share (TEXT, INTEGER, BIGINT); the PostgreSQL adapter rewrites placeholders.
Booleans are stored as 0/1 so both engines answer alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

Row = tuple[Any, ...]


class Cursor(Protocol):
    """A cursor inside one transaction."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> object: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> object: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """Where read models live: SQLite file or PostgreSQL schema."""

    dialect: str
    # Errors that put the fault with the database (away, busy, full; a table or a right
    # missing), not with the event being applied: a projection batch that fails with one
    # is tried again later, never set aside.
    database_faults: tuple[type[BaseException], ...]

    def write(self) -> AbstractContextManager[Cursor]:
        """One transaction, committed on a clean exit and rolled back otherwise."""
        ...

    def read(self) -> AbstractContextManager[Cursor]:
        """A read-only snapshot for queries."""
        ...

    def close(self) -> None: ...


def page(sql: str, skip: int, take: int) -> tuple[str, tuple[int, int]]:
    """Append LIMIT/OFFSET to a query (same syntax on both engines)."""
    return f"{sql} LIMIT ? OFFSET ?", (take, skip)
