"""The FastAPI application: routers, error table, limits, and the server's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from adapters.bootstrap import ServerContainer
from adapters.dispatch.builtin import BuiltInWorkerError
from adapters.http.errors import install_error_handlers
from adapters.http.intake import SubmissionGate
from adapters.http.keyring import KeyRing
from adapters.http.limits import BodyLimit
from adapters.http.routers import (
    artifacts,
    configuration,
    environments,
    events,
    health,
    keys,
    packages,
    policies,
    pools,
    projects,
    targets,
    tasks,
    workers,
)
from adapters.http.startup import StartFailureMessage, remember
from agent.executor import prefer_pidfd_child_watcher

log = logging.getLogger("shoal.server")

KEY_RECHECK_S = 2.0


def announce_admin_key(key: str, path: str) -> None:
    """Print the first-start key once, where the operator running the server sees it."""
    print(
        "\n"
        "  Shoal is installed. Administrator API key (shown once):\n\n"
        f"    {key}\n\n"
        f"  It is also in {path} (mode 0600).\n",
        flush=True,
    )


async def start_built_in_worker(container: ServerContainer) -> None:
    """Start the built-in worker process. A failure does not stop the server (it may
    have external workers only): it is logged, and each built-in step tries again."""
    if container.builtin is None:
        return
    try:
        await container.builtin.start()
    except BuiltInWorkerError as exc:
        log.error("the built-in worker process did not start", extra={"error": str(exc)})


def create_app(container: ServerContainer) -> FastAPI:
    """An app bound to ``container``; starting it (lifespan) starts the container."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Blocking store calls go to threads; the default pool (cores + 4) is too small
        # for many steps writing logs at once.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="shoal-io")
        )
        prefer_pidfd_child_watcher()
        key = container.start()

        async def read_models_then_transport() -> str:
            # The embedded nats-server's users come from a read model: caught up first.
            await container.start_projections()
            return await container.start_transport()

        # The built-in worker process boots (imports, mostly) while the projector catches
        # up and NATS comes up. Both are awaited to the end, so that a failure of either
        # undoes all that started (an embedded nats-server or a projector process left
        # behind would outlive the server).
        started = await asyncio.gather(
            read_models_then_transport(), start_built_in_worker(container), return_exceptions=True
        )
        failure = next((r for r in started if isinstance(r, BaseException)), None)
        if failure is not None:
            if container.builtin is not None:
                await container.builtin.stop()
            with contextlib.suppress(Exception):
                await container.stop_transport()
            await container.stop_projections()
            container.stop()
            remember(app.state, failure)
            raise failure
        nats_url = started[0]
        if key is not None:
            announce_admin_key(key, str(container.settings.admin_key_file))
        dispatcher = container.dispatcher()
        # Nodes sharing PostgreSQL do not hear of each other's key changes: there a
        # verified key is checked against the store again after a couple of seconds.
        keyring = KeyRing(container.app, None if container.settings.database_url is None
                          else KEY_RECHECK_S)
        container.app.on_recorded(keyring.forget)
        app.state.keyring = keyring
        app.state.container = container
        app.state.dispatcher = dispatcher
        await dispatcher.start()
        await container.hub.start(dispatcher.changed)
        # What exists by now (the frameworks' and the server's long-lived objects) stays
        # for good: frozen, the collector no longer walks it, and a full collection went
        # from 50-70 ms, a pause every request and step in flight waited out, to ~6 ms.
        gc.collect()
        gc.freeze()
        log.info("ready", extra={"position": container.projector.watch.position, "nats": nats_url})
        try:
            yield
        finally:
            await dispatcher.stop()
            if container.builtin is not None:
                await container.builtin.stop()
            await container.stop_transport()
            await container.stop_projections()
            container.stop()

    app = FastAPI(
        title="Shoal",
        version="0.1.0",
        description="Event-sourced orchestrator for deployment workers.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # FastAPI tries routes in order: tasks (queued and polled the most) come first.
    for module in (
        tasks, health, pools, workers, policies, keys, events, projects, configuration,
        packages, artifacts, environments, targets,
    ):
        app.include_router(module.router)
    # Inside the body limit (added last, so outermost): a gated request's body is read
    # under the same limit as any other.
    app.add_middleware(SubmissionGate)
    app.add_middleware(
        BodyLimit, max_bytes=container.settings.max_body_bytes,
        # The package upload's own limit (plus room for the form around the file).
        per_path={"/api/packages": container.settings.max_package_bytes + 64 * 1024},
    )
    app.add_middleware(StartFailureMessage)
    return app
