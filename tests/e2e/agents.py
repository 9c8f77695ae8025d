"""`shoal agent` processes for end-to-end tests: registered and run through the CLI, as an
operator would, each with a home folder of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import SHOAL, ServerProcess


class AgentProcess:
    """One registered worker and, while running, its `shoal agent run` process."""

    def __init__(
        self, server: ServerProcess, home: Path, name: str, pools: list[str],
        style: str = "polling", *extra: str,
    ) -> None:
        self.server = server
        self.home = home
        self.name = name
        self.pools = pools
        self.style = style
        self.extra = list(extra)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.worker_id = ""
        self.pump: threading.Thread | None = None

    def register(self, *more: str) -> subprocess.CompletedProcess[str]:
        """`shoal agent register-worker`; raises with its stderr when it fails."""
        pools = [a for p in self.pools for a in ("--worker-pool", p)]
        done = subprocess.run(
            [SHOAL, "agent", "register-worker", "--server", self.server.url,
             "--api-key", self.server.admin_key, "--name", self.name, *pools,
             "--comms-style", self.style, "--home", str(self.home), *self.extra, *more],
            capture_output=True, text=True, timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(f"register-worker exited {done.returncode}: {done.stderr}")
        with httpx.Client(base_url=self.server.url, headers={"X-Api-Key": self.server.admin_key}) as c:
            found = [w for w in c.get("/api/workers", params={"name": self.name}).json()["items"]
                     if w["name"] == self.name]
        self.worker_id = found[0]["id"]
        return done

    def start(self, online_within: float = 15.0) -> AgentProcess:
        """`shoal agent run`, returning once the server sees the worker online."""
        self.lines = []
        self.proc = subprocess.Popen(
            [SHOAL, "agent", "run", "--home", str(self.home)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ},
        )
        proc = self.proc

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.lines.append(line.rstrip("\n"))

        self.pump = threading.Thread(target=pump, daemon=True)
        self.pump.start()
        if online_within:
            self.wait_online(online_within)
        return self

    def wait_online(self, timeout: float = 15.0, online: bool = True) -> dict[str, Any]:
        """Wait until the server's membership view says the worker is (or is not) online."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.server.url, headers={"X-Api-Key": self.server.admin_key}) as c:
            while time.monotonic() < deadline:
                w: dict[str, Any] = c.get(f"/api/workers/{self.worker_id}").json()
                if w["is_online"] == online:
                    return w
                if self.proc is not None and self.proc.poll() is not None and online:
                    raise AssertionError(f"agent {self.name} exited: {self.output()}")
                time.sleep(0.05)
        raise AssertionError(f"agent {self.name} not {'online' if online else 'offline'} in "
                             f"{timeout}s: {self.output()}")

    def output(self) -> str:
        """What the agent printed so far."""
        return "\n".join(self.lines[-40:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._release(proc)
        return proc.returncode

    def _release(self, proc: subprocess.Popen[str]) -> None:
        if self.pump is not None:
            self.pump.join(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def kill(self) -> None:
        """kill -9: the agent dies without a word."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._release(self.proc)
            self.proc = None

    def wait_exit(self, timeout: float) -> int:
        """Wait for the agent to exit by itself; its exit code."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._release(self.proc)
        self.proc = None
        return code
