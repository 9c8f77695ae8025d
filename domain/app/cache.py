"""The aggregate cache: the library's LRU cache, never set back to an older version.

With one process writing the store (SQLite) the cache is trusted without reading the
store first, so a stale copy in it is served until that aggregate's next save conflicts.
Two races put one there: a reader that missed the cache read the store just before a save
and put its copy after the save's; and two saves of one aggregate, in threads woken in
the other order, put their copies out of order. Versions decide instead of timing.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Any
from uuid import UUID

from eventsourcing.application import LRUCache

__all__ = ["NewestCache"]


class NewestCache(LRUCache[UUID, Any]):
    """An LRU cache of aggregates that keeps the newest version of each."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self._putting = threading.Lock()
        # The newest saved version of recently saved aggregates, kept when their copies
        # leave the cache, so that a read from before a save cannot come back after it.
        self._saved: OrderedDict[UUID, int] = OrderedDict()
        self._saved_max = maxsize * 10

    def saved(self, aggregate_id: UUID, aggregate: Any) -> None:
        """Keep ``aggregate`` as its save committed it, unless a newer copy is kept."""
        with self._putting:
            if self._saved.get(aggregate_id, -1) < aggregate.version:
                self._saved[aggregate_id] = aggregate.version
                self._saved.move_to_end(aggregate_id)
                if len(self._saved) > self._saved_max:
                    self._saved.popitem(last=False)
            self._put_newest(aggregate_id, aggregate)

    def put(self, key: UUID, value: Any) -> Any:
        """Keep a copy read from the store (the repository's put after a miss), unless a
        save newer than it was committed meanwhile or a newer copy is kept."""
        with self._putting:
            if value is not None and value.version < self._saved.get(key, -1):
                return None
            return self._put_newest(key, value)

    def drop(self, aggregate_id: UUID) -> None:
        """Forget the copy of an aggregate (a save of it lost a race: it was stale)."""
        with self._putting, contextlib.suppress(KeyError):
            self.get(aggregate_id, evict=True)

    def _put_newest(self, key: UUID, value: Any) -> Any:
        try:
            cached = self.get(key)
        except KeyError:
            cached = None
        if cached is not None and value is not None and cached.version > value.version:
            return None
        return super().put(key, value)
