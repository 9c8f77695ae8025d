"""Pure rules shared by aggregates and the Application. No I/O, no state."""

from __future__ import annotations

import unicodedata

from domain.errors import Rejected

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
MAX_CAPACITY = 1000


def clean_name(value: str, what: str = "name") -> str:
    """A name with outer spaces removed; rejects empty, over-long or control characters."""
    name = value.strip()
    if not name:
        raise Rejected(f"{what} must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise Rejected(f"{what} must be at most {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise Rejected(f"{what} must not contain control characters")
    return name


def name_key(name: str) -> str:
    """The form under which a name is unique: names differing only in case collide."""
    return unicodedata.normalize("NFKC", name).casefold()


def clean_description(value: str) -> str:
    """A description within its length limit."""
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise Rejected(f"description must be at most {MAX_DESCRIPTION_LENGTH} characters")
    return value


def check_capacity(capacity: int) -> int:
    """How many steps a worker may run at once: 1 to MAX_CAPACITY."""
    if not 1 <= capacity <= MAX_CAPACITY:
        raise Rejected(f"capacity must be between 1 and {MAX_CAPACITY}, got {capacity}")
    return capacity
