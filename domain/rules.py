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


# Numbers stored in events must fit a 64-bit column in every read model, or a projection
# would fail on the event forever; these bounds are far beyond any sensible value.
MAX_SORT_ORDER = 1_000_000_000
MAX_DURATION_S = 366 * 24 * 3600


def check_sort_order(sort_order: int) -> int:
    """A pool's sort position, within +/- MAX_SORT_ORDER."""
    if not -MAX_SORT_ORDER <= sort_order <= MAX_SORT_ORDER:
        raise Rejected(f"sort_order must be between {-MAX_SORT_ORDER} and {MAX_SORT_ORDER}")
    return sort_order


def check_duration(seconds: int, what: str) -> int:
    """A positive number of seconds of at most a year."""
    if not 1 <= seconds <= MAX_DURATION_S:
        raise Rejected(f"{what} must be between 1 and {MAX_DURATION_S} seconds")
    return seconds


def check_capacity(capacity: int) -> int:
    """How many steps a worker may run at once: 1 to MAX_CAPACITY."""
    if not 1 <= capacity <= MAX_CAPACITY:
        raise Rejected(f"capacity must be between 1 and {MAX_CAPACITY}, got {capacity}")
    return capacity
