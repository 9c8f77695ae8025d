"""Unit-test fixtures: an in-memory (POPO) Shoal, installed or not."""

from __future__ import annotations

import pytest

from domain.app import Shoal

# Settings that would point an Application at a real database. Unit tests must never
# follow them, even when the developer's shell exports them for ops/serve.
_PERSISTENCE_VARS = ("PERSISTENCE_MODULE", "SHOAL_PERSISTENCE_MODULE")


@pytest.fixture(autouse=True)
def _in_memory_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PERSISTENCE_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fresh() -> Shoal:
    """A Shoal over an empty in-memory event store, not installed."""
    return Shoal()


@pytest.fixture
def app(fresh: Shoal) -> Shoal:
    """An installed Shoal: default pool, default policy and an admin key exist."""
    fresh.install()
    return fresh
