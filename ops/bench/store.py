"""Event-store benchmark: append rate and projection catch-up, SQLite and PostgreSQL.

    .venv/bin/python ops/bench/store.py [--events N] [--postgres URL] [--no-postgres]
                                        [--profile append|update|catchup]

Each measurement has a baseline taken in the same run on the same machine and database,
so the ratio means something even on a slow or noisy box:

* append (create_pool): one command = one save of 2 aggregates (pool + name index),
  exactly as the API does it. Baseline: a bare INSERT loop, one commit per row, into a
  table with the columns of eventsourcing's stored-events table (sqlite3 with WAL, as
  eventsourcing sets it; psycopg on PostgreSQL). Target: >= 50% of the bare rate.
* append (update_pool): a one-event command (changing a pool's description).
* catch-up: every projection from position 0 over the N events above, with
  ProjectionRunner. Baseline: reading and decoding the notification log alone (the
  ceiling a runner can reach). Target: >= 20,000 events/s on SQLite.

Prints a table, then one line of JSON with every number. PostgreSQL runs in a fresh
schema ``bench_<random>`` (through ``?schema=``), dropped afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import json
import os
import pstats
import secrets
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from adapters.store import ApplicationLog, PostgresTarget, open_application, open_views
from domain.actors import SYSTEM
from domain.app import Shoal
from projections.catalog import all_projections
from projections.runner import ProjectionRunner

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
APPEND_TARGET = 0.5  # of the bare INSERT rate
CATCH_UP_TARGET = 20_000  # events/s on SQLite
READ_BATCH = 2000  # as the projection runner reads
WARM_UP = 20  # commands before timing starts (connections, statement caches)

Result = dict[str, Any]


# -- helpers -------------------------------------------------------------------------------


class Meter:
    """Accumulates a count and the wall time of the calls made through it, optionally
    under cProfile, so one measurement can be taken in several interleaved rounds."""

    def __init__(self, profile: bool = False) -> None:
        self.count = 0
        self.seconds = 0.0
        self.profiler = cProfile.Profile() if profile else None

    def run(self, fn: Callable[[], int]) -> None:
        gc.collect()
        if self.profiler:
            self.profiler.enable()
        start = time.perf_counter()
        self.count += fn()
        self.seconds += time.perf_counter() - start
        if self.profiler:
            self.profiler.disable()

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    def print_profile(self, title: str) -> None:
        if self.profiler:
            out = io.StringIO()
            pstats.Stats(self.profiler, stream=out).sort_stats("tottime").print_stats(30)
            print(f"--- profile: {title} ---\n{out.getvalue()}", file=sys.stderr)


def timed(fn: Callable[[], int], profile: bool = False, title: str = "") -> tuple[int, float]:
    """Run ``fn`` (which returns a count) once; return (count, seconds)."""
    meter = Meter(profile)
    meter.run(fn)
    meter.print_profile(title)
    return meter.count, meter.seconds


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``?schema=`` set (other query parameters kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
    query.append(("schema", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


def sample_payloads(app: Shoal, count: int = 200) -> list[tuple[str, bytes]]:
    """(topic, state) pairs of real stored events, so baseline rows are the same size."""
    notifications = app.recorder.select_notifications(start=1, limit=count)
    return [(n.topic, bytes(n.state)) for n in notifications]


def chunks(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal sizes."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# -- the measurements (one backend) -------------------------------------------------------


class BareInserts:
    """The baseline: one commit per INSERT into a table shaped like eventsourcing's
    stored-events table, rows the size of real events."""

    def __init__(self, payloads: list[tuple[str, bytes]]) -> None:
        self.payloads = payloads
        self.i = 0

    def row(self) -> tuple[str, bytes]:
        self.i += 1
        return self.payloads[self.i % len(self.payloads)]


class SqliteBare(BareInserts):
    """sqlite3 on a file next to the event store, journal_mode=WAL: the only pragma
    eventsourcing.sqlite sets (synchronous stays at its default, FULL)."""

    def __init__(self, path: Path, payloads: list[tuple[str, bytes]]) -> None:
        super().__init__(payloads)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(
            "CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, "
            "topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))"
        )
        self.cur = self.conn.cursor()

    def insert(self, rows: int) -> int:
        for _ in range(rows):
            topic, state = self.row()
            self.cur.execute("BEGIN")
            self.cur.execute(
                "INSERT INTO stored_events VALUES (?,?,?,?)", (uuid.uuid4().hex, 1, topic, state)
            )
            self.conn.commit()
        return rows

    def close(self) -> None:
        self.conn.close()


class PostgresBare(BareInserts):
    """psycopg, one transaction per INSERT; the table has eventsourcing's bigserial
    notification id and its unique index."""

    def __init__(self, url: str, payloads: list[tuple[str, bytes]]) -> None:
        import psycopg

        super().__init__(payloads)
        self.conn = psycopg.connect(PostgresTarget.parse(url).conninfo())
        self.conn.execute(
            "CREATE TABLE bare_events (originator_id uuid NOT NULL, "
            "originator_version bigint NOT NULL, topic text, state bytea, "
            "notification_id bigserial, PRIMARY KEY (originator_id, originator_version))"
        )
        self.conn.execute("CREATE UNIQUE INDEX bare_events_nid ON bare_events (notification_id)")
        self.conn.commit()
        self.cur = self.conn.cursor()

    def insert(self, rows: int) -> int:
        for _ in range(rows):
            topic, state = self.row()
            self.cur.execute(
                "INSERT INTO bare_events (originator_id, originator_version, topic, state) "
                "VALUES (%s, %s, %s, %s)",
                (uuid.uuid4(), 1, topic, state),
            )
            self.conn.commit()
        return rows

    def close(self) -> None:
        self.conn.close()


def append_phase(
    app: Shoal, bare: SqliteBare | PostgresBare, args: argparse.Namespace
) -> tuple[Result, Result, Result]:
    """create_pool for about half the events, update_pool for the rest, and the bare
    INSERT loop, interleaved in rounds so that all three see the same disk and CPU
    conditions (fsync latency on a shared VM drifts by 2x within a minute)."""
    creates = max(1, args.events // 4)
    updates = max(1, args.events - 2 * creates)
    bare_rows = min(2 * creates, args.baseline_rows)
    rounds = max(1, min(args.rounds, creates))
    create_m = Meter(args.profile == "append")
    update_m = Meter(args.profile == "update")
    bare_m = Meter()
    pool_ids: list[Any] = []
    created = 0
    updated = 0
    events = {"create": 0, "update": 0}

    def position() -> int:
        return app.recorder.max_notification_id() or 0

    def create(n: int) -> Callable[[], int]:
        def go() -> int:
            nonlocal created
            for _ in range(n):
                saved = app.create_pool(name=f"bench pool {created}", actor=SYSTEM)
                pool_ids.append(saved.aggregate.id)
                created += 1
            return n

        return go

    def update(n: int) -> Callable[[], int]:
        def go() -> int:
            nonlocal updated
            for _ in range(n):
                pool_id = pool_ids[updated % len(pool_ids)]
                app.update_pool(pool_id, description=f"revision {updated}", actor=SYSTEM)
                updated += 1
            return n

        return go

    for c, u, b in zip(
        chunks(creates, rounds), chunks(updates, rounds), chunks(bare_rows, rounds), strict=True
    ):
        bare_m.run(functools.partial(bare.insert, b))
        before = position()
        create_m.run(create(c))
        events["create"] += position() - before
        before = position()
        update_m.run(update(u))
        events["update"] += position() - before

    create_m.print_profile("append (create_pool)")
    update_m.print_profile("append (update_pool)")

    def result(m: Meter, appended: int) -> Result:
        return {
            "commands": m.count,
            "events": appended,
            "seconds": m.seconds,
            "commands_per_s": m.per_s,
            "events_per_s": rate(appended, m.seconds),
        }

    return (
        result(create_m, events["create"]),
        result(update_m, events["update"]),
        {"rows": bare_m.count, "seconds": bare_m.seconds, "rows_per_s": bare_m.per_s},
    )


def read_and_decode(app: Shoal) -> Result:
    """The notification log read in runner-sized batches and decoded: the ceiling."""
    to_event = app.mapper.to_domain_event

    def read_log(decode: bool) -> int:
        position, count = 0, 0
        while True:
            batch = app.recorder.select_notifications(
                start=position, limit=READ_BATCH, inclusive_of_start=False
            )
            if not batch:
                return count
            if decode:
                for n in batch:
                    to_event(n)
            count += len(batch)
            position = batch[-1].id

    read_count, read_seconds = timed(lambda: read_log(decode=False))
    count, seconds = timed(lambda: read_log(decode=True))
    return {
        "events": count,
        "seconds": seconds,
        "events_per_s": rate(count, seconds),
        "read_only_events_per_s": rate(read_count, read_seconds),
    }


def catch_up(app: Shoal, data_dir: Path, url: str | None, profile: str | None) -> Result:
    views = open_views(data_dir, url)
    try:
        runner = ProjectionRunner(ApplicationLog(app), views, all_projections())
        runner.setup()
        count, seconds = timed(runner.catch_up, profile == "catchup", "catch-up")
        return {"events": count, "seconds": seconds, "events_per_s": rate(count, seconds)}
    finally:
        views.close()


def run_backend(name: str, data_dir: Path, url: str | None, args: argparse.Namespace) -> Result:
    print(
        f"[{name}] appending {args.events} events, interleaved with the bare INSERT loop ...",
        file=sys.stderr,
        flush=True,
    )
    app = open_application(data_dir, url)
    try:
        app.install()
        for i in range(WARM_UP):  # connections, statement caches, table pages
            app.create_pool(name=f"warm-up {i}", actor=SYSTEM)
        payloads = sample_payloads(app)
        bare: SqliteBare | PostgresBare = (
            SqliteBare(data_dir / "bare.db", payloads) if url is None else PostgresBare(url, payloads)
        )
        try:
            bare.insert(WARM_UP)
            create, update, bare_result = append_phase(app, bare, args)
        finally:
            bare.close()
        print(f"[{name}] catch-up ...", file=sys.stderr, flush=True)
        decode = read_and_decode(app)
        projected = catch_up(app, data_dir, url, args.profile)
        log_events = app.recorder.max_notification_id() or 0
    finally:
        app.close()
    return {
        "log_events": log_events,
        "append_create_pool": create,
        "append_update_pool": update,
        "bare_insert": bare_result,
        "read_decode": decode,
        "catch_up": projected,
    }


# -- PostgreSQL schema lifetime ------------------------------------------------------------


@contextmanager
def bench_schema(base_url: str) -> Iterator[str]:
    """A fresh schema for the run, dropped afterwards (even on failure)."""
    import psycopg

    schema = f"bench_{secrets.token_hex(4)}"
    url = with_schema(base_url, schema)
    try:
        yield url  # open_application creates the schema (adapters.store.check_postgres)
    finally:
        target = PostgresTarget.parse(base_url)
        with psycopg.connect(target.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- report --------------------------------------------------------------------------------


def table(results: dict[str, Result]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []
    for backend, r in results.items():
        bare = r["bare_insert"]["rows_per_s"]
        for label, key in (
            ("append create_pool", "append_create_pool"),
            ("append update_pool", "append_update_pool"),
        ):
            m = r[key]
            rows.append(
                (
                    label,
                    backend,
                    f"{m['events_per_s']:,.0f} ev/s ({m['commands_per_s']:,.0f} cmd/s)",
                    f"{bare:,.0f} rows/s bare INSERT",
                    f"{m['events_per_s'] / bare:.0%}",
                )
            )
        c, d = r["catch_up"], r["read_decode"]
        rows.append(
            (
                "projection catch-up",
                backend,
                f"{c['events_per_s']:,.0f} ev/s ({c['events']:,} events)",
                f"{d['events_per_s']:,.0f} ev/s read+decode",
                f"{c['events_per_s'] / d['events_per_s']:.0%}",
            )
        )
    head = ("measurement", "backend", "rate", "baseline", "ratio")
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(5)]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdicts(results: dict[str, Result]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend, r in results.items():
        for command in ("create_pool", "update_pool"):
            ratio = r[f"append_{command}"]["events_per_s"] / r["bare_insert"]["rows_per_s"]
            out[f"append_{command}_{backend}"] = {
                "ratio": ratio,
                "target": APPEND_TARGET,
                "met": ratio >= APPEND_TARGET,
            }
    if "sqlite" in results:
        eps = results["sqlite"]["catch_up"]["events_per_s"]
        out["catch_up_sqlite"] = {
            "events_per_s": eps,
            "target": CATCH_UP_TARGET,
            "met": eps >= CATCH_UP_TARGET,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", type=int, default=20_000, help="events to append, then to project (default 20000)"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=os.environ.get("SHOAL_TEST_DATABASE_URL") or DEFAULT_PG_URL,
        help=f"PostgreSQL server (default: $SHOAL_TEST_DATABASE_URL or {DEFAULT_PG_URL})",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--baseline-rows",
        type=int,
        default=5000,
        help="rows in the bare INSERT loop (default 5000, capped at the create_pool event count)",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="append measurements are interleaved in this many rounds"
    )
    parser.add_argument(
        "--profile",
        choices=("append", "update", "catchup"),
        help="cProfile one phase (output on stderr; slows it down)",
    )
    args = parser.parse_args()
    if args.events < 4:
        parser.error("--events must be at least 4")

    results: dict[str, Result] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        results["sqlite"] = run_backend("sqlite", Path(tmp) / "sqlite", None, args)
    if not args.no_postgres:
        try:
            with (
                bench_schema(args.postgres) as url,
                tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp,
            ):
                results["postgres"] = run_backend("postgres", Path(tmp), url, args)
        except Exception as exc:  # report SQLite numbers even when PostgreSQL is absent
            errors["postgres"] = f"{type(exc).__name__}: {exc}"
            print(f"[postgres] skipped: {errors['postgres']}", file=sys.stderr)

    print(table(results))
    checks = verdicts(results)
    for name, v in checks.items():
        shown = f"{v['ratio']:.0%}" if "ratio" in v else f"{v['events_per_s']:,.0f} ev/s"
        goal = f"{v['target']:.0%}" if "ratio" in v else f"{v['target']:,} ev/s"
        print(f"target {name}: {shown} (target >= {goal}) {'met' if v['met'] else 'MISSED'}")
    print(
        json.dumps(
            {
                "events": args.events,
                "python": sys.version.split()[0],
                "results": results,
                "targets": checks,
                "errors": errors,
            },
            separators=(",", ":"),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
