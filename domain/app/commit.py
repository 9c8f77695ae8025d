"""Group commit: concurrent saves share one transaction (and one disk sync).

A save with nothing else in flight writes at once, in its caller's thread. Otherwise it
hands its events to one writer thread and waits; the writer takes everything waiting,
writes it in one transaction and hands each caller back its own recordings. If
the combined write conflicts (two callers changed the same aggregate), it writes each
caller's events on their own, so only the caller that lost the race sees the conflict,
exactly as without grouping.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from eventsourcing.persistence import RecordConflictError

Put = Callable[[Sequence[Any]], list[Any]]

MAX_GROUP_EVENTS = 5000


class GroupCommitter:
    """One writer thread in front of the event store."""

    def __init__(self, put: Put) -> None:
        self._put = put
        self._queue: queue.SimpleQueue[tuple[Sequence[Any], Future[list[Any]]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Held by whoever is writing: the writer thread or a caller on the fast path.
        self._writing = threading.Lock()
        self._queued = 0

    def put(self, events: Sequence[Any]) -> list[Any]:
        """Write ``events`` atomically (possibly with others'); their recordings."""
        if self._queued == 0 and self._writing.acquire(blocking=False):
            try:
                # Nothing to group with: skip the hand-off to the writer thread.
                return self._put(events)
            finally:
                self._writing.release()
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._write_forever, name="shoal-group-commit", daemon=True
                    )
                    self._thread.start()
        future: Future[list[Any]] = Future()
        with self._start_lock:
            self._queued += 1
        self._queue.put((events, future))
        return future.result()

    def close(self) -> None:
        """Stop the writer once it has written what it holds."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5.0)
            self._thread = None

    def _write_forever(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            size = len(first[0])
            while size < MAX_GROUP_EVENTS:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._write(group)
                    return
                group.append(item)
                size += len(item[0])
            self._write(group)

    def _write(self, group: list[tuple[Sequence[Any], Future[list[Any]]]]) -> None:
        with self._writing:
            self._write_group(group)
        with self._start_lock:
            self._queued -= len(group)

    def _write_group(self, group: list[tuple[Sequence[Any], Future[list[Any]]]]) -> None:
        if len(group) > 1:
            try:
                recordings = self._put([e for events, _ in group for e in events])
            except RecordConflictError:
                pass  # someone lost a race: write them one by one below
            except BaseException as exc:
                for _, future in group:
                    future.set_exception(exc)
                return
            else:
                start = 0
                for events, future in group:
                    future.set_result(recordings[start:start + len(events)])
                    start += len(events)
                return
        for events, future in group:
            try:
                future.set_result(self._put(events))
            except BaseException as exc:
                future.set_exception(exc)
