"""The projector process: the server's projections, run in a child process of the server.

Decoding events and writing read-model rows, tracking and commits took a sixth of the
server's single GIL under load, in competition with the event loop that serves HTTP and
dispatches steps. Here they use another core. The server starts
``python -m adapters.projector --data-dir DIR`` (the database URL, when there is one, in
``SHOAL_DATABASE_URL``, so that no password shows in the process list) and drives it
over stdin and stdout with agent/pipe.py's frames (adapters/projector_process.py is its
side). The ops, by direction:

server -> projector
    ``wake {position}``: the server saved events up to ``position``: catch up now.
projector -> server
    ``ready {pid, protocol, position}``: set up and caught up with the log (the server
    serves nothing before this); ``progress {position}``: a batch committed, the read
    models include every event up to ``position``; ``error {error}``: a batch failed (it
    is retried with back-off; the next ``progress`` says it works again).

* It opens the event store and the read models as the server does (adapters/store.py)
  and runs ProjectionRunner: set up, catch up, then follow, woken by ``wake`` frames and,
  for writes of other nodes, every ``--poll-interval`` seconds and (PostgreSQL) by LISTEN.
* End of file on stdin (the server stopped, or died: a killed server leaves no projector
  behind) or SIGTERM: it lets the batch in hand commit and exits. SIGINT is ignored: a
  Ctrl-C in a terminal reaches the whole process group, and the server ends this process
  itself once it has stopped writing.
* On SQLite it holds ``<data-dir>/projector.lock``: views.db has one writer, and a new
  projector waits for one that a killed server left to finish its last batch.
* Frames go out on a private copy of stdout (fd 1 then points at stderr, so a stray print
  cannot corrupt them); log lines go to stderr as JSON lines.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from adapters import logs
from adapters.store import (
    ApplicationLog,
    PostgresLogListener,
    StoreUnavailable,
    open_application,
    open_views,
)
from agent.pipe import (
    BrokenPipeStream,
    Frame,
    FrameReader,
    MalformedFrame,
    decode,
    encode,
    number,
    protect_stdout,
)
from projections.catalog import all_projections
from projections.runner import ProjectionRunner

log = logging.getLogger("shoal.projector")

PROTOCOL = 1
LOCK_WAIT_S = 15.0
EXIT_STORE_UNAVAILABLE = 3


class Reports:
    """Frames to the server, written whole from whichever thread has one (the runner's,
    the main one); dropped once the server has gone."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._open = True

    def send(self, frame: Frame) -> None:
        """Write one frame (blocking: the server reads them as they come)."""
        data = memoryview(encode(frame))
        with self._lock:
            try:
                while self._open and data:
                    data = data[os.write(self._fd, data):]
            except OSError:
                self._open = False  # the server is gone; end of file on stdin follows

    def progress(self, position: int) -> None:
        """The read models include every event up to ``position``."""
        self.send({"op": "progress", "position": position})

    def error(self, error: str) -> None:
        """A batch failed; the runner retries it."""
        self.send({"op": "error", "error": error})


def read_wakes(runner: ProjectionRunner, ended: threading.Event, fd: int = 0) -> None:
    """Wake ``runner`` for each ``wake`` frame on ``fd`` (only the highest position of a
    read counts); set ``ended`` at end of file."""
    reader = FrameReader()
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            break
        try:
            bodies = reader.feed(data)
        except BrokenPipeStream as exc:
            # Nothing after a corrupt length can be framed again: end as if the server left.
            log.error("the pipe from the server is corrupt; stopping", extra={"reason": str(exc)})
            break
        highest = 0
        for body in bodies:
            try:
                frame = decode(body)
                if frame["op"] != "wake":
                    raise MalformedFrame(f"unknown op {frame['op']!r}")
                highest = max(highest, number(frame, "position"))
            except MalformedFrame as exc:
                log.warning("refused a frame from the server", extra={"reason": str(exc)})
        if highest:
            runner.wake(highest)
    ended.set()


def hold_projector_lock(data_dir: Path, wait_s: float = LOCK_WAIT_S) -> int:
    """Lock ``<data-dir>/projector.lock`` for the life of this process (released by the
    kernel when it ends, however it ends), waiting up to ``wait_s`` for another holder
    to exit; StoreUnavailable when it does not."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "projector.lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise StoreUnavailable(
                    f"another projector process still writes the read models in {data_dir}"
                ) from None
            time.sleep(0.05)


def serve(options: argparse.Namespace, reports: Reports) -> int:
    """Run the projections for the server until it goes away; the exit code."""
    ended = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: ended.set())
    database_url: str | None = options.database_url
    try:
        if database_url is None:
            hold_projector_lock(options.data_dir)
        # Few connections: one thread reads the log and one writes the views (PostgreSQL
        # nodes share max_connections).
        app = open_application(options.data_dir, database_url, pg_pool_size=1, pg_max_overflow=2)
    except StoreUnavailable as exc:
        log.error("cannot open the event store", extra={"error": str(exc)})
        reports.error(str(exc))
        return EXIT_STORE_UNAVAILABLE
    views = open_views(options.data_dir, database_url, pg_max_size=2)
    runner = ProjectionRunner(
        ApplicationLog(app), views, all_projections(), poll_interval=options.poll_interval,
        on_progress=reports.progress, on_error=reports.error,
    )
    listener: PostgresLogListener | None = None
    channel = getattr(app.recorder, "channel_name", None)
    if database_url is not None and channel:
        listener = PostgresLogListener(database_url, channel, runner.wake)
    # Reading starts at once: a server that dies during a long catch-up is noticed.
    threading.Thread(target=read_wakes, args=(runner, ended), name="shoal-projector-wakes",
                     daemon=True).start()
    try:
        try:
            runner.setup()
            runner.catch_up()
        except Exception as exc:
            log.exception("the read models could not be brought up to date")
            reports.error(f"{type(exc).__name__}: {exc}")
            return 1
        reports.send({"op": "ready", "pid": os.getpid(), "protocol": PROTOCOL,
                      "position": runner.position})
        log.info("projector ready", extra={"position": runner.position})
        runner.start()
        if listener is not None:
            listener.start()
        ended.wait()
        if listener is not None:
            listener.stop()
        runner.stop()
        log.info("projector stopped", extra={"position": runner.position})
        return 0
    finally:
        views.close()
        app.close()


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line the server starts this process with."""
    parser = argparse.ArgumentParser(prog="python -m adapters.projector",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the server's data folder")
    parser.add_argument("--database-url", default=os.environ.get("SHOAL_DATABASE_URL") or None,
                        help="PostgreSQL URL (default: $SHOAL_DATABASE_URL; none: SQLite)")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="seconds between looks at the log when nothing wakes it")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m adapters.projector``."""
    options = parse(argv)
    reports = Reports(protect_stdout())
    logs.configure(options.log_level, stream=sys.stderr, process="projector")
    # Ignored, not handled: this process starts no children that would inherit it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Read models may lag a little; steps may not: when the cores are busy, the server and
    # the built-in worker come first.
    os.nice(5)
    return serve(options, reports)


if __name__ == "__main__":
    sys.exit(main())
