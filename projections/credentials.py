"""Agent credentials: the bcrypt hash of each agent's NATS password, for the file the
embedded nats-server reads its users from. Deregistering a worker removes its row, which
is what revokes the agent."""

from __future__ import annotations

from domain.workers import Worker
from projections.base import Projection, handles
from projections.sql import Cursor, Database


class AgentCredentials(Projection):
    """One row per worker whose agent holds credentials."""

    name = "agent_credentials"
    version = 1
    tables = {  # noqa: RUF012
        "rm_agent_credentials": "worker_id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL",
    }

    @handles(Worker.CredentialsIssued)
    def _issued(self, e: Worker.CredentialsIssued, position: int, cur: Cursor) -> None:
        cur.execute("DELETE FROM rm_agent_credentials WHERE worker_id = ?", (str(e.originator_id),))
        cur.execute("INSERT INTO rm_agent_credentials VALUES (?, ?)", (str(e.originator_id), e.secret_hash))

    @handles(Worker.Deregistered)
    def _deregistered(self, e: Worker.Deregistered, position: int, cur: Cursor) -> None:
        cur.execute("DELETE FROM rm_agent_credentials WHERE worker_id = ?", (str(e.originator_id),))


def agent_credentials(db: Database) -> dict[str, str]:
    """worker id -> bcrypt hash of its agent's NATS password."""
    with db.read() as cur:
        cur.execute("SELECT worker_id, secret_hash FROM rm_agent_credentials ORDER BY worker_id")
        return {r[0]: r[1] for r in cur.fetchall()}
