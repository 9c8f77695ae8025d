"""Integration fixtures: Applications, read-model databases and runners on the real
store of the test's ``backend``, each closed (or stopped) when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.store import (
    ApplicationLog,
    PostgresViews,
    SqliteViews,
    app_env,
    open_application,
    open_views,
)
from domain.app import Shoal
from projections.base import Projection
from projections.catalog import all_projections
from projections.runner import ProjectionRunner
from tests.conftest import Backend

Views = SqliteViews | PostgresViews


@pytest.fixture
def new_app(backend: Backend) -> Iterator[Callable[..., Shoal]]:
    """Open another Application on the test's store (as another process would).

    On PostgreSQL each Application keeps POSTGRES_POOL_SIZE connections open from the
    start; tests that open many pass a small ``pg_pool_size`` to stay well inside the
    server's max_connections (which other test runs share)."""
    apps: list[Shoal] = []

    def make(pg_pool_size: int | None = None) -> Shoal:
        if pg_pool_size is None or backend.database_url is None:
            app = open_application(backend.data_dir, backend.database_url)
        else:
            env = app_env(backend.data_dir, backend.database_url)
            app = Shoal(env={**env, "POSTGRES_POOL_SIZE": str(pg_pool_size)})
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def app(new_app: Callable[..., Shoal]) -> Shoal:
    """An installed Application (default pool, default policy, administrator key)."""
    shoal = new_app()
    shoal.install()
    return shoal


@pytest.fixture
def new_views(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Views]]:
    """Open the store's read-model database; ``scratch=True`` opens an empty one
    elsewhere (a new SQLite file, or a new PostgreSQL schema)."""
    opened: list[Views] = []

    def make(scratch: bool = False) -> Views:
        if not scratch:
            views = open_views(backend.data_dir, backend.database_url)
        elif backend.database_url is None:
            views = open_views(tmp_path / f"scratch-{len(opened)}", None)
        else:
            views = PostgresViews(request.getfixturevalue("pg_schema_factory")())
        opened.append(views)
        return views

    yield make
    for views in opened:
        views.close()


@pytest.fixture
def views(new_views: Callable[..., Views]) -> Views:
    """The store's read-model database."""
    return new_views()


@pytest.fixture
def new_runner() -> Iterator[Callable[..., ProjectionRunner]]:
    """A runner over an Application's log; started runners are stopped afterwards."""
    runners: list[ProjectionRunner] = []

    def make(
        app: Shoal,
        views: Views,
        projections: Sequence[Projection] | None = None,
        **options: Any,
    ) -> ProjectionRunner:
        chosen = all_projections() if projections is None else projections
        runner = ProjectionRunner(ApplicationLog(app), views, chosen, **options)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()
