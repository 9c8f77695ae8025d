"""NATS subject and stream names, in one place (see ARCHITECTURE.md, "Transport").

Every name that embeds an id goes through ``token()``: a worker id containing ``.``,
``*`` or ``>`` would silently address other subjects (``shoal.work.a.>`` would match
every worker below ``a``), which for per-agent permissions is a security hole, so it is
refused instead.
"""

from __future__ import annotations

import re

# JetStream streams.
WORK_STREAM = "SHOAL_WORK"
REPORTS_STREAM = "SHOAL_REPORTS"

# What each stream captures; also what agent permissions are built from.
WORK_SUBJECTS = "shoal.work.>"
REPORTS_SUBJECTS = "shoal.reports.>"

# Object stores for package transfer and artifacts (each is the stream OBJ_<bucket>).
PACKAGES_BUCKET = "shoal-packages"
ARTIFACTS_BUCKET = "shoal-artifacts"
PACKAGES_STREAM = f"OBJ_{PACKAGES_BUCKET}"

# Whitespace ends a token in the protocol; ".", "*", ">" are separator and wildcards.
_FORBIDDEN = re.compile(r"[.*>\s]")


def token(value: str, what: str = "worker id") -> str:
    """Return ``value`` if it is usable as one subject token, else raise ValueError."""
    if not value:
        raise ValueError(f"{what} must not be empty")
    if _FORBIDDEN.search(value):
        raise ValueError(f"{what} {value!r} must not contain '.', '*', '>' or whitespace")
    return value


def agent_exec(worker_id: str) -> str:
    """Request/reply to a listening agent: run this instruction now."""
    return f"shoal.agent.{token(worker_id)}.exec"


def agent_health(worker_id: str) -> str:
    """Request/reply to an agent: run the health check."""
    return f"shoal.agent.{token(worker_id)}.health"


def agent_cancel(worker_id: str) -> str:
    """Request/reply to an agent: cancel a running step."""
    return f"shoal.agent.{token(worker_id)}.cancel"


def agent_all(worker_id: str) -> str:
    """Every request subject of one agent (what its credentials may subscribe to)."""
    return f"shoal.agent.{token(worker_id)}.>"


def work(worker_id: str) -> str:
    """JetStream work queue subject a polling agent pulls from (stream ``SHOAL_WORK``)."""
    return f"shoal.work.{token(worker_id)}"


def reports(worker_id: str) -> str:
    """JetStream subject an agent publishes its reports on (stream ``SHOAL_REPORTS``)."""
    return f"shoal.reports.{token(worker_id)}"


def heartbeat(worker_id: str) -> str:
    """Core subject an agent publishes its heartbeat on."""
    return f"shoal.heartbeat.{token(worker_id)}"


def control(worker_id: str) -> str:
    """Request/reply from an agent to the server about itself (e.g. deregister); the
    NATS identity that may publish here is the proof of who asks."""
    return f"shoal.control.{token(worker_id)}"


CONTROL_SUBJECTS = "shoal.control.*"
HEARTBEAT_SUBJECTS = "shoal.heartbeat.*"


def events(aggregate: str, event: str) -> str:
    """Relay of the event log, e.g. ``shoal.events.Task.StepFinished``."""
    return f"shoal.events.{token(aggregate, 'aggregate')}.{token(event, 'event')}"


# -- per-agent identity and permissions ----------------------------------------------------
#
# Each agent connects as its own NATS user. What it may touch is derived from its worker
# id here and nowhere else, so the permission tests and the accounts file cannot drift.

SERVER_USER = "shoal-server"


def agent_user(worker_id: str) -> str:
    """The NATS user name of a worker's agent."""
    return f"agent-{token(worker_id)}"


def inbox_prefix(worker_id: str) -> str:
    """The agent's private reply inbox prefix. Agents may not subscribe to the shared
    ``_INBOX.>``: JetStream delivers pulled instructions to an inbox, so a shared one would
    let one agent read another's work."""
    return f"_INBOX_{token(worker_id)}"


def work_consumer(worker_id: str) -> str:
    """Durable pull consumer of a polling agent on stream ``SHOAL_WORK``."""
    return f"work_{token(worker_id)}"


def agent_permissions(worker_id: str) -> dict[str, object]:
    """The NATS permissions of one agent: its own instructions in, its own reports and
    heartbeats out, the JetStream calls its pull consumer needs, and reading single
    messages of the packages object store's stream (how it fetches a package: see
    adapters/nats/objects.py); nothing else, so it can neither write packages nor read
    artifacts or other streams."""
    consumer = work_consumer(worker_id)
    return {
        "publish": {
            "allow": [
                reports(worker_id),
                heartbeat(worker_id),
                control(worker_id),
                f"$JS.API.CONSUMER.MSG.NEXT.{WORK_STREAM}.{consumer}",
                f"$JS.API.CONSUMER.INFO.{WORK_STREAM}.{consumer}",
                f"$JS.ACK.{WORK_STREAM}.{consumer}.>",
                f"$JS.API.STREAM.MSG.GET.{PACKAGES_STREAM}",
            ]
        },
        "subscribe": {"allow": [agent_all(worker_id), f"{inbox_prefix(worker_id)}.>"]},
        # Lets a listening agent answer the requests it was sent (and nothing more).
        "allow_responses": True,
    }
