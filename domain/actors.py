"""Who did something. Every event carries one, so the audit log can say who."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ActorKind(str, Enum):
    API_KEY = "api_key"
    USER = "user"
    AGENT = "agent"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    """An API key, a user, an agent or the server itself."""

    kind: ActorKind
    id: str
    name: str

    def as_dict(self) -> dict[str, str]:
        """Plain form for read models and JSON answers."""
        return {"kind": self.kind.value, "id": self.id, "name": self.name}


SYSTEM = Actor(ActorKind.SYSTEM, "system", "Shoal server")
