"""Argument types shared by the `shoal` sub-commands (argparse calls them on the text)."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    """An integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 included (0: let the system choose)."""
    return _port_in(text, 0)


def remote_port(text: str) -> int:
    """A TCP port to connect to: 1-65535."""
    return _port_in(text, 1)


def _port_in(text: str, low: int) -> int:
    value = int(text)
    if not low <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be {low}-65535, got {value}")
    return value
