"""Server settings, read once from the command line and the environment."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATA_DIR = Path(".shoal")
MAX_BODY_BYTES = 1024 * 1024
MAX_PACKAGE_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start; nothing here is read again later."""

    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    # External NATS (cluster) URL(s); None: run an embedded nats-server.
    nats_url: str | None = None
    # Where the embedded nats-server listens ("HOST:PORT"); None: a free loopback port.
    nats_listen: str | None = None
    task_cap: int = 5
    node_name: str = field(default_factory=socket.gethostname)
    max_body_bytes: int = MAX_BODY_BYTES
    # POST /api/packages takes bodies up to this size (the package plus its form).
    max_package_bytes: int = MAX_PACKAGE_BYTES
    # How long a read waits for the projections to reach the reader's own last write.
    read_wait_s: float = 5.0
    # How long a step waits for a worker before it fails.
    worker_wait_limit_s: float = 600.0
    # A step's log is cut (with a marker) past this many bytes.
    step_log_limit_bytes: int = 50 * 1024 * 1024

    @classmethod
    def from_env(cls, **given: object) -> Settings:
        """Settings from CLI values, falling back to SHOAL_* environment variables."""
        values = {k: v for k, v in given.items() if v is not None}
        if "database_url" not in values and os.environ.get("SHOAL_DATABASE_URL"):
            values["database_url"] = os.environ["SHOAL_DATABASE_URL"]
        if "nats_url" not in values and os.environ.get("SHOAL_NATS_URL"):
            values["nats_url"] = os.environ["SHOAL_NATS_URL"]
        if "data_dir" not in values and os.environ.get("SHOAL_DATA_DIR"):
            values["data_dir"] = Path(os.environ["SHOAL_DATA_DIR"])
        if "data_dir" in values:
            values["data_dir"] = Path(str(values["data_dir"]))
        return cls(**values)  # type: ignore[arg-type]

    @property
    def work_root(self) -> Path:
        """Parent of the built-in worker's per-step working folders."""
        return self.data_dir / "work"

    @property
    def signing_key_file(self) -> Path:
        """The Ed25519 key instructions to agents are signed with (mode 0600). Nodes that
        share a database must share this file too: agents pin its public half."""
        return self.data_dir / "signing-key.pem"

    @property
    def admin_key_file(self) -> Path:
        """Where the first start writes the administrator key (mode 0600)."""
        return self.data_dir / "admin-api-key"

    @property
    def secrets_key_file(self) -> Path:
        """The key secrets are sealed with at rest, e.g. SSH workers' private keys (mode
        0600). Nodes that share a database must share this file too."""
        return self.data_dir / "secrets-key"
