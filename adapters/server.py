"""`shoal server`: bind, build, serve, shut down cleanly."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from adapters.settings import Settings

log = logging.getLogger("shoal.server")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every request after the first on a connection waits ~40 ms (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _quiet_server(config: Any) -> Any:
    """uvicorn's Server, but signals only set flags: the first SIGINT/SIGTERM starts a
    graceful shutdown, a second forces it, and the process then exits 0 on its own
    instead of re-raising the signal."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_exit)
            try:
                yield
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

        def request_exit(self) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets)
            if self.force_exit:
                # uvicorn skips the application's shutdown when forced; left to the loop's
                # teardown it would run cancelled (a traceback, children left behind). A
                # forced stop only stops waiting for clients: the steps still end.
                await self.lifespan.shutdown()

    return Server(config)


def unreachable_nats(urls: str) -> str | None:
    """None when a server of the comma-separated NATS URL list accepts TCP connections,
    else one line saying which addresses were tried (credentials left out)."""
    tried = []
    for url in urls.split(","):
        parts = urlsplit(url.strip() if "://" in url else f"nats://{url.strip()}")
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
        tried.append(f"{host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=3):
                return None
        except OSError:
            continue
    return f"cannot reach NATS at {', '.join(tried)}"


def lock_data_dir(data_dir: Path) -> int | None:
    """Hold an exclusive lock on the data folder for the life of the process. A SQLite
    store has one owner: its aggregate cache trusts that no one else writes. Returns the
    lock's file descriptor, or None when another server holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def run_server(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM. Exit 2 when the address cannot be used, 3 when the
    event store cannot be reached."""
    from adapters import logs

    logs.configure(args.log_level)
    settings = Settings.from_env(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        task_cap=args.task_cap,
        node_name=args.node_name,
        nats_url=args.nats_url,
        nats_listen=args.nats_listen,
        worker_wait_limit_s=float(args.worker_wait_limit),
        step_log_limit_bytes=args.step_log_limit_mb * 1024 * 1024,
    )
    if settings.database_url is None and lock_data_dir(settings.data_dir) is None:
        print(f"shoal server: another shoal server is already using {settings.data_dir}",
              file=sys.stderr)
        return 2
    try:
        sock = _bind(settings.host, settings.port)
    except OSError as exc:
        print(f"shoal server: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
              file=sys.stderr)
        return 2

    import uvicorn

    from adapters.bootstrap import build_server
    from adapters.http.app import create_app
    from adapters.store import StoreUnavailable

    if settings.nats_url is not None:
        problem = unreachable_nats(settings.nats_url)
        if problem is not None:
            sock.close()
            print(f"shoal server: {problem}", file=sys.stderr)
            return 3
    try:
        container = build_server(settings)
    except StoreUnavailable as exc:
        sock.close()
        print(f"shoal server: {exc}", file=sys.stderr)
        return 3
    host, port = sock.getsockname()[:2]
    log.info(
        "starting",
        extra={
            "url": f"http://{host}:{port}",
            "store": "postgresql" if settings.database_url else "sqlite",
            "data_dir": str(settings.data_dir),
            "node": settings.node_name,
        },
    )
    config = uvicorn.Config(
        create_app(container),
        log_config=None,
        access_log=True,
        lifespan="on",
        timeout_graceful_shutdown=10,
        # C event loop and HTTP parser: the server's single thread of Python is what limits
        # how many steps it dispatches, and these take a good share of asyncio's and h11's
        # cost per request off it. Safe here because the server spawns no step processes
        # (uvloop forks without vfork): the built-in worker process does that.
        loop="uvloop",
        http="httptools",
    )
    server = _quiet_server(config)
    server.run(sockets=[sock])
    log.info("stopped")
    return 0 if server.started else 3
