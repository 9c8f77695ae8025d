"""Persistence: which event store the Application uses and where read models live.

SQLite (default): ``<data-dir>/events.db`` for the event store and ``views.db`` for the
read models, so projection writes never queue behind event appends on one file lock.
PostgreSQL: one database (and schema) for both; the library's per-insert NOTIFY wakes
the projections on every node.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from domain.app import Shoal
from projections.skipped import Undecodable, describe

log = logging.getLogger("shoal.store")


class StoreUnavailable(Exception):
    """The database cannot be reached; the message names the host, never a password."""


# -- database URLs -------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresTarget:
    """The parts of a postgresql:// URL."""

    host: str
    port: int
    dbname: str
    user: str
    password: str
    schema: str | None

    @classmethod
    def parse(cls, url: str) -> PostgresTarget:
        """Split a ``postgresql://user:pass@host:port/db?schema=s`` URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("database URL must start with postgresql://")
        schemas = parse_qs(parts.query).get("schema")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            dbname=unquote(parts.path.lstrip("/")) or "postgres",
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            schema=schemas[0] if schemas else None,
        )

    @property
    def where(self) -> str:
        """host:port/db, for messages (no credentials)."""
        return f"{self.host}:{self.port}/{self.dbname}"

    def conninfo(self) -> str:
        """libpq keyword form; the schema becomes the search_path."""
        from psycopg.conninfo import make_conninfo

        options = f"-c search_path={self.schema}" if self.schema else None
        return make_conninfo(
            host=self.host, port=self.port, dbname=self.dbname, user=self.user,
            password=self.password or None, options=options, connect_timeout=5,
        )


def app_env(
    data_dir: Path, database_url: str | None, *, pg_pool_size: int = 2, pg_max_overflow: int = 8
) -> dict[str, str]:
    """The eventsourcing environment for the Application."""
    if database_url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(data_dir / "events.db"),
            "SQLITE_LOCK_TIMEOUT": "10",
            # One server process owns a SQLite store (the data folder is locked), so its
            # cache is always current: no read before each write to fast-forward it.
            "AGGREGATE_CACHE_FASTFORWARD": "n",
        }
    pg = PostgresTarget.parse(database_url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": pg.dbname,
        "POSTGRES_HOST": pg.host,
        "POSTGRES_PORT": str(pg.port),
        "POSTGRES_USER": pg.user,
        "POSTGRES_PASSWORD": pg.password,
        "POSTGRES_CONNECT_TIMEOUT": "5",
        # Two idle connections per node, more on demand: nine nodes must not exhaust a
        # default max_connections of 100.
        "POSTGRES_POOL_SIZE": str(pg_pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pg_max_overflow),
    }
    if pg.schema:
        env["POSTGRES_SCHEMA"] = pg.schema
    return env


def check_postgres(database_url: str) -> None:
    """Fail fast, with one clear line, when PostgreSQL does not answer."""
    import psycopg

    try:
        pg = PostgresTarget.parse(database_url)
    except ValueError as exc:
        raise StoreUnavailable(str(exc)) from None
    try:
        with psycopg.connect(pg.conninfo()) as conn:
            if pg.schema:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{pg.schema}"')
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if pg.password:
            reason = reason.replace(pg.password, "***")
        raise StoreUnavailable(f"cannot reach PostgreSQL at {pg.where}: {reason}") from None


def open_application(data_dir: Path, database_url: str | None, **pool: int) -> Shoal:
    """The Application on the chosen store; ``pool``: app_env's PostgreSQL pool sizes."""
    if database_url is not None:
        check_postgres(database_url)
    try:
        return Shoal(env=app_env(data_dir, database_url, **pool))
    except Exception as exc:  # the library raises several kinds on a bad store
        raise StoreUnavailable(f"cannot open the event store: {type(exc).__name__}: {exc}") from None


# -- the event log, as the projection runner reads it ------------------------------------


class ApplicationLog:
    """The Application's notification log, decoded into domain events."""

    def __init__(self, app: Shoal) -> None:
        self.app = app

    def read(self, after: int, limit: int, upto: int | None = None) -> Sequence[tuple[int, Any]]:
        """Events after ``after``, at most ``limit``, not past ``upto``."""
        notifications = self.app.recorder.select_notifications(
            start=after, limit=limit, stop=upto, inclusive_of_start=False
        )
        to_event = self.app.mapper.to_domain_event
        events: list[tuple[int, Any]] = []
        for n in notifications:
            try:
                events.append((n.id, to_event(n)))
            except Exception as exc:  # e.g. an event a newer version wrote
                events.append((n.id, Undecodable(n.topic, describe(exc))))
        return events

    def max_position(self) -> int:
        """The last position written."""
        return self.app.recorder.max_notification_id() or 0


# -- read-model databases -----------------------------------------------------------------


class SqliteViews:
    """Read models in a SQLite file, one connection per thread, WAL so readers never
    block the projection writer."""

    dialect = "sqlite"
    # Locked, busy, full, I/O errors, and a table or column that is not there.
    database_faults: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=10, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Cursor]:
        """One IMMEDIATE transaction."""
        conn = self._conn()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cur.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Cursor]:
        """A consistent snapshot for one query or a few."""
        conn = self._conn()
        cur = conn.cursor()
        cur.execute("BEGIN")
        try:
            yield cur
        finally:
            conn.rollback()
            cur.close()

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def _without_nul(params: Sequence[Any]) -> Sequence[Any]:
    """``params`` with NUL characters in text replaced by U+FFFD: PostgreSQL's text
    cannot hold NUL, and a step may well print one (binary output, ``find -print0``).
    Refused, the line would stop every projection at that event for good."""
    for value in params:
        if type(value) is str and "\0" in value:
            return [v.replace("\0", "\ufffd") if type(v) is str else v for v in params]
    return params


class _PgCursor:
    """psycopg cursor that takes the ``?`` placeholders the projections write."""

    _converted: dict[str, str] = {}  # noqa: RUF012 (a shared cache of rewritten SQL)

    def __init__(self, cur: Any, pipeline: Any = None) -> None:
        self._cur = cur
        self._pipeline = pipeline

    @classmethod
    def _sql(cls, sql: str) -> str:
        converted = cls._converted.get(sql)
        if converted is None:
            converted = cls._converted[sql] = sql.replace("%", "%%").replace("?", "%s")
        return converted

    def _settle(self) -> None:
        # In pipeline mode results arrive later; wait for them before reading one.
        if self._pipeline is not None:
            self._pipeline.sync()

    @property
    def rowcount(self) -> int:
        self._settle()
        return int(self._cur.rowcount)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> object:
        return self._cur.execute(self._sql(sql), _without_nul(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> object:
        return self._cur.executemany(self._sql(sql), [_without_nul(row) for row in rows])

    def fetchone(self) -> Any:
        self._settle()
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        self._settle()
        return list(self._cur.fetchall())


class PostgresViews:
    """Read models in PostgreSQL, through a connection pool."""

    dialect = "postgres"

    def __init__(self, database_url: str, *, max_size: int = 10) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        # The connection, a lock or serialization failure, a full disk (OperationalError,
        # as is the pool's timeout), a table, column or right that is not there
        # (ProgrammingError), an aborted transaction (InternalError); not data the
        # columns refuse (DataError) or a broken rule (IntegrityError).
        self.database_faults: tuple[type[BaseException], ...] = (
            psycopg.OperationalError, psycopg.InterfaceError, psycopg.ProgrammingError,
            psycopg.InternalError,
        )
        self.target = PostgresTarget.parse(database_url)
        self.pool = ConnectionPool(
            self.target.conninfo(), min_size=1, max_size=max_size, open=True, timeout=10,
            name="shoal-views",
        )

    @contextmanager
    def write(self) -> Iterator[_PgCursor]:
        """One transaction, pipelined: a batch's statements go out without waiting for
        each answer, which is most of the cost of a catch-up on a network database."""
        with (
            self.pool.connection() as conn,
            conn.pipeline() as pipeline,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            yield _PgCursor(cur, pipeline)

    @contextmanager
    def read(self) -> Iterator[_PgCursor]:
        """A read-only snapshot (REPEATABLE READ, so several queries agree)."""
        from psycopg import IsolationLevel

        with self.pool.connection() as conn:
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute("SET TRANSACTION READ ONLY")
                    yield _PgCursor(cur)
            finally:
                conn.isolation_level = None

    def close(self) -> None:
        """Close the pool."""
        self.pool.close()


def open_views(
    data_dir: Path, database_url: str | None, *, pg_max_size: int = 10
) -> SqliteViews | PostgresViews:
    """Where the read models of this store live."""
    if database_url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteViews(data_dir / "views.db")
    return PostgresViews(database_url, max_size=pg_max_size)


# -- live wake-ups across processes (PostgreSQL) ------------------------------------------


class PostgresLogListener:
    """LISTENs on the event table's channel and calls ``wake`` on every insert, so a
    node sees other nodes' events within milliseconds, not at the next poll."""

    def __init__(self, database_url: str, channel: str, wake: Any) -> None:
        self.target = PostgresTarget.parse(database_url)
        self.channel = channel
        self.wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shoal-pg-listen", daemon=True)

    def start(self) -> None:
        """Listen in a thread of its own."""
        self._thread.start()

    def _run(self) -> None:
        import psycopg
        from psycopg import sql

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.target.conninfo(), autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    # Events written while we were not yet listening: look once now.
                    self.wake()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.wake()
            except psycopg.Error:
                log.warning("lost the PostgreSQL notification channel; reconnecting")
                self._stop.wait(1.0)

    def stop(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._thread.join(3.0)
