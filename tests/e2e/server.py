"""Start `shoal server` as a separate process and talk to it over HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from adapters.remote import PatientReads

SHOAL = str(Path(sys.executable).with_name("shoal"))
URL_LINE = re.compile(r'"url":"(http://[^"]+)"')
# A test's reads ride out "503: read models are behind, try again shortly" as the CLI's
# do: on a loaded machine the projector may trail a burst of writes by more than the
# server's read wait, which is the server working as documented, not a failure. A read
# that stays 503 this long still fails the test.
READ_PATIENCE_S = 20.0


class ServerProcess:
    """One `shoal server` process on a free port, with its output captured."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.extra = list(extra or [])  # more `shoal server` options
        self.env = dict(env or {})  # more variables in the server's environment
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.url = ""

    def start(self, timeout: float = 20.0) -> ServerProcess:
        args = [SHOAL, "server", "--data-dir", str(self.data_dir), "--port", "0", *self.extra]
        if self.database_url:
            args += ["--database-url", self.database_url]
        env = {k: v for k, v in os.environ.items() if k != "SHOAL_DATABASE_URL"}
        env.update(self.env)
        self.lines = []
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        found = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                match = URL_LINE.search(line)
                if match and not self.url_found:
                    self.url = match.group(1)
                    self.url_found = True
                    found.set()

        self.url_found = False
        self.pump = threading.Thread(target=pump, daemon=True)
        self.pump.start()
        if not found.wait(timeout):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("server never became healthy:\n" + "".join(self.lines))

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin-api-key").read_text().strip()

    def client(self, key: str | None = None, *, patient: bool = True) -> httpx.Client:
        """A client with the admin key (or ``key``); ``patient=False`` sees a 503 at once."""
        headers = {"X-Api-Key": key if key is not None else self.admin_key}
        transport = PatientReads(httpx.HTTPTransport(), READ_PATIENCE_S if patient else 0.0,
                                 notice=lambda _: None)
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, transport=transport)

    def crash(self) -> None:
        """kill -9 the server (no clean shutdown), then release its pipe."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.stop()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.pump.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        return code


def schema_url(base: str) -> str:
    """A fresh schema on the test PostgreSQL, as a ?schema= URL."""
    import psycopg

    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema={schema}"


def drop_schema(base: str, url: str) -> None:
    import psycopg

    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
