"""Fixtures shared by every tier: the PostgreSQL server, a schema per test, and the
``backend`` parameter that runs a test once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest
from psycopg import sql

from adapters.store import PostgresTarget, StoreUnavailable, check_postgres

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class Backend(NamedTuple):
    """Where a test's store lives: SQLite files in ``data_dir`` when ``database_url`` is
    None, otherwise a PostgreSQL schema of its own (``data_dir`` still holds local files)."""

    data_dir: Path
    database_url: str | None

    @property
    def kind(self) -> str:
        return "sqlite" if self.database_url is None else "postgres"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The test PostgreSQL server. Missing: a failure in CI, a printed skip elsewhere."""
    url = os.environ.get("SHOAL_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    try:
        check_postgres(url)
    except StoreUnavailable as exc:
        reason = f"PostgreSQL is needed for this test and does not answer: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: a missing service is a failure, not a skip)")
        print(f"SKIPPED: {reason}; set SHOAL_TEST_DATABASE_URL to run it")
        pytest.skip(f"{reason}; set SHOAL_TEST_DATABASE_URL to run it")
    return url


def _admin(pg_url: str) -> psycopg.Connection:
    return psycopg.connect(PostgresTarget.parse(pg_url).conninfo(), autocommit=True)


@pytest.fixture
def pg_schema_factory(pg_url: str) -> Iterator[Callable[[], str]]:
    """Make fresh schemas (``<pg_url>?schema=t_<hex>``); all are dropped after the test."""
    made: list[str] = []

    def make() -> str:
        schema = f"t_{secrets.token_hex(6)}"
        with _admin(pg_url) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        made.append(schema)
        return f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"

    yield make
    with _admin(pg_url) as conn:
        for schema in made:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_schema_url(pg_schema_factory: Callable[[], str]) -> str:
    """A PostgreSQL URL whose ``?schema=`` is this test's own, dropped afterwards."""
    return pg_schema_factory()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """(data_dir, database_url): SQLite files in tmp_path, or a schema of its own."""
    if request.param == "sqlite":
        return Backend(tmp_path / "data", None)
    return Backend(tmp_path / "data", request.getfixturevalue("pg_schema_url"))
