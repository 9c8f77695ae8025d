"""Argument types shared by the `shoal` sub-commands (argparse calls them on the text)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from urllib.parse import urlsplit


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


def server_url(text: str) -> str:
    """A server's base URL: http:// or https://, a host, and a valid port if any."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a URL ({exc}): {text!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL such as http://127.0.0.1:8000, got {text!r}")
    return text


def server_options(
    parser: argparse.ArgumentParser, key_help: str = "an API key", *, required: bool = True,
    server_help: str = "e.g. http://127.0.0.1:8000",
) -> None:
    """``--server`` and ``--api-key``, checked as every command that talks to a server
    checks them."""
    parser.add_argument("--server", type=server_url, required=required, help=server_help)
    parser.add_argument("--api-key", type=api_key, required=required, help=key_help)


def api_key(text: str) -> str:
    """An API key as typed: printable ASCII (it travels in an HTTP header)."""
    if not text or not text.isascii() or not text.isprintable():
        raise argparse.ArgumentTypeError("not an API key (keys are printable ASCII text)")
    return text


def undecodable(argv: Sequence[str]) -> str | None:
    """The first argument that is not valid UTF-8 (Python keeps its stray bytes as lone
    surrogates, which nothing downstream can encode), shown with those bytes escaped."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return None
