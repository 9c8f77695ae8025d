"""`shoal replay`: rebuild the read models from position 0, or verify them."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from adapters.settings import Settings
from adapters.store import (
    ApplicationLog,
    PostgresViews,
    SqliteViews,
    StoreUnavailable,
    open_application,
    open_views,
)
from projections.catalog import all_projections
from projections.runner import ProjectionRunner, diff
from projections.skipped import skipped_events
from projections.sql import Database


def _with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"] + [("schema", schema)]
    return urlunsplit(parts._replace(query=urlencode(query)))


class _Progress:
    """A line on stderr every second or so, so a long replay is visibly alive."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.last = time.monotonic()

    def show(self, position: int) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            print(f"  replayed {position}/{self.total} events", file=sys.stderr, flush=True)


def _replay(runner: ProjectionRunner, until: int, progress: _Progress) -> None:
    while runner.step(until) > 0:
        progress.show(runner.position)


def run_replay(args: argparse.Namespace) -> int:
    """Exit 0 when rebuilt or verified equal, 1 when verification found a difference or
    an event could not be applied (each is named), 3 when the store cannot be reached."""
    settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url)
    if settings.database_url is None and not (settings.data_dir / "events.db").exists():
        print(f"shoal replay: no event store in {settings.data_dir}", file=sys.stderr)
        return 2
    try:
        app = open_application(settings.data_dir, settings.database_url)
    except StoreUnavailable as exc:
        print(f"shoal replay: {exc}", file=sys.stderr)
        return 3
    live = open_views(settings.data_dir, settings.database_url)
    try:
        log = ApplicationLog(app)
        runner = ProjectionRunner(log, live, all_projections())
        runner.setup()
        started = time.monotonic()
        if not args.verify:
            end = log.max_position()
            progress = _Progress(end)
            runner.reset()
            _replay(runner, end, progress)
            runner.catch_up()
            took = time.monotonic() - started
            print(f"rebuilt {len(runner.projections)} projections from {runner.position} "
                  f"events in {took:.2f}s")
            return 1 if _set_aside(live) else 0
        return _verify(settings, log, runner, started)
    finally:
        live.close()
        app.close()


def _set_aside(views: Database) -> bool:
    """Name on stderr the events a projection could not apply (one line per event and
    reason, with the projections that lack it); whether there were any."""
    lacking: dict[tuple[int, str, str], list[str]] = {}
    for s in skipped_events(views):
        lacking.setdefault((s.position, s.event_type, s.error), []).append(s.projection)
    if lacking:
        events = len({position for position, _, _ in lacking})
        print(f"{events} event{'s' if events > 1 else ''} could not be applied and "
              f"{'were' if events > 1 else 'was'} set aside (the read models lack "
              f"{'them' if events > 1 else 'it'}):", file=sys.stderr)
        for (position, event_type, error), projections in lacking.items():
            print(f"  position {position} {event_type} in {', '.join(sorted(projections))}: "
                  f"{error}", file=sys.stderr)
    return bool(lacking)


def _verify(settings: Settings, log: ApplicationLog, live: ProjectionRunner, started: float) -> int:
    # Bring the live views up to the end first, so a stopped server's lag is not a diff.
    live.catch_up()
    until = live.position
    scratch: Database
    cleanup: list[object] = []
    if settings.database_url is None:
        folder = tempfile.TemporaryDirectory(prefix="shoal-verify-")
        cleanup.append(folder)
        scratch = SqliteViews(Path(folder.name) / "views.db")
    else:
        schema = f"shoal_verify_{uuid.uuid4().hex[:12]}"
        scratch = PostgresViews(_with_schema(settings.database_url, schema))
        with scratch.write() as cur:
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        cleanup.append(schema)
    try:
        rebuilt = ProjectionRunner(log, scratch, all_projections())
        rebuilt.setup()
        _replay(rebuilt, until, _Progress(until))
        differences = diff(live.dump(), rebuilt.dump())
    finally:
        if isinstance(scratch, PostgresViews):
            with scratch.write() as cur:
                cur.execute(f'DROP SCHEMA IF EXISTS "{cleanup[0]}" CASCADE')
        scratch.close()
        for item in cleanup:
            if isinstance(item, tempfile.TemporaryDirectory):
                item.cleanup()
    took = time.monotonic() - started
    if differences:
        print(f"read models differ from a replay of {until} events:", file=sys.stderr)
        for line in differences:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"verified {len(live.projections)} projections against a replay of {until} "
          f"events in {took:.2f}s: identical")
    return 1 if _set_aside(live.db) else 0
