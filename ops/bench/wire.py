"""A minimal HTTP/1.1 client for the benches: keep-alive connections, JSON in and out.

Why not httpx: the benches run on the same two cores as the server they measure, and
httpx spends ~3 ms of CPU per request here, as much as the server does to queue a task.
This client spends a tenth of that, so a bench measures the server rather than its own
client. It speaks only what the benches need: Content-Length bodies, no chunking, no
redirects, no TLS.
"""

from __future__ import annotations

import asyncio
import resource
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson


class WireError(Exception):
    """The server answered with an error status, or not in a way this client reads."""


class Wire:
    """``connections`` keep-alive connections to the server at ``url``; requests take a
    free one (or wait for it). Use as ``async with Wire(url, key) as w: ...``."""

    def __init__(self, url: str, api_key: str, connections: int = 8) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._head = f"Host: {self.host}:{self.port}\r\nX-Api-Key: {api_key}\r\n".encode()
        self._size = connections
        self._free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._all: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Wire:
        for _ in range(self._size):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._all.append(writer)
            self._free.put_nowait((reader, writer))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for writer in self._all:
            writer.close()

    async def request(
        self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """(status, decoded JSON body or None)."""
        if params:
            path = f"{path}?{urlencode(params)}"
        body = b"" if json is None else orjson.dumps(json)
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._head
        if json is not None:
            head += b"Content-Type: application/json\r\n"
        message = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        reader, writer = await self._free.get()
        healthy = False
        try:
            writer.write(message)
            status_line, _, headers = (await reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
            status = int(status_line.split(b" ", 2)[1])
            length = 0
            for line in headers.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"transfer-encoding":
                    raise WireError("chunked answers are not supported")
            data = await reader.readexactly(length) if length else b""
            healthy = True
        finally:
            if not healthy:
                writer.close()  # a half-read answer would poison the connection: a new one
                reader, writer = await asyncio.open_connection(self.host, self.port)
                self._all.append(writer)
            self._free.put_nowait((reader, writer))
        return status, (orjson.loads(data) if data else None)

    async def get(self, path: str, **params: Any) -> Any:
        """GET, the decoded body; WireError unless 2xx."""
        status, body = await self.request("GET", path, params=params or None)
        if status >= 300:
            raise WireError(f"GET {path}: {status} {body}")
        return body

    async def post(self, path: str, json: Any) -> Any:
        """POST JSON, the decoded body; WireError unless 2xx."""
        status, body = await self.request("POST", path, json=json)
        if status >= 300:
            raise WireError(f"POST {path}: {status} {body}")
        return body


def own_cpu_s() -> float:
    """CPU seconds this process has used so far (user + system): the benches report
    their own share next to what they measure."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
