"""The aggregate cache keeps the newest version of each aggregate, whatever order the
copies arrive in (domain.app.cache.NewestCache)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid4

import pytest

from domain.app.cache import NewestCache


@dataclass
class Copy:
    version: int


@pytest.fixture
def cache() -> NewestCache:
    return NewestCache(maxsize=4)


def cached(cache: NewestCache, key: UUID) -> int | None:
    try:
        return int(cache.get(key).version)
    except KeyError:
        return None


def test_saves_that_land_out_of_order_leave_the_newest(cache: NewestCache) -> None:
    key = uuid4()
    cache.saved(key, Copy(6))
    cache.saved(key, Copy(5))  # its thread was woken after the next save's
    assert cached(cache, key) == 6


def test_a_read_from_before_a_save_does_not_replace_it(cache: NewestCache) -> None:
    key = uuid4()
    cache.saved(key, Copy(6))
    cache.put(key, Copy(5))  # a reader that missed, read the store, then was overtaken
    assert cached(cache, key) == 6


def test_nor_after_the_saved_copy_was_dropped(cache: NewestCache) -> None:
    key = uuid4()
    cache.saved(key, Copy(6))
    cache.drop(key)
    cache.put(key, Copy(5))
    assert cached(cache, key) is None
    cache.put(key, Copy(6))  # a read from after the save is kept
    assert cached(cache, key) == 6


def test_a_newer_read_or_save_replaces_an_older_copy(cache: NewestCache) -> None:
    key = uuid4()
    cache.put(key, Copy(1))
    cache.saved(key, Copy(2))
    assert cached(cache, key) == 2
    cache.put(key, Copy(3))  # saved by another process (a store shared by nodes)
    assert cached(cache, key) == 3


def test_it_stays_a_bounded_lru(cache: NewestCache) -> None:
    keys = [uuid4() for _ in range(6)]
    for key in keys:
        cache.saved(key, Copy(1))
    assert [cached(cache, k) for k in keys] == [None, None, 1, 1, 1, 1]
