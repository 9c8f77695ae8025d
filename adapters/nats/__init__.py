"""NATS transport: the embedded nats-server (``embedded``), the connection owner
(``bus``) and the subject names (``subjects``). See ARCHITECTURE.md, "Transport"."""

from adapters.nats.bus import BusError, BusUnavailable, NatsBus, NoReply, StreamSpec
from adapters.nats.embedded import EmbeddedNats, EmbeddedNatsConfig, EmbeddedNatsError, find_nats_server

__all__ = [
    "BusError",
    "BusUnavailable",
    "EmbeddedNats",
    "EmbeddedNatsConfig",
    "EmbeddedNatsError",
    "NatsBus",
    "NoReply",
    "StreamSpec",
    "find_nats_server",
]
