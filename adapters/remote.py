"""CLI commands that talk to a running server over HTTP: run-script, events tail."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import orjson

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

# How long a read answered 503 ("try again shortly") is asked again before the command
# gives up, and the longest pause between two tries whatever Retry-After says.
PATIENCE_S = 120.0
MAX_PAUSE_S = 5.0


class CliError(Exception):
    """Ends the command with one line on stderr and an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int) -> NoReturn:
    """Stop the command."""
    raise CliError(message, code)


def client(server: str, api_key: str, prog: str = "shoal") -> httpx.Client:
    """An HTTP client for the server with the key; its reads ride out a server that is
    briefly unable to answer (see PatientReads), saying so on stderr as ``prog``."""
    return httpx.Client(
        base_url=server.rstrip("/"), headers={"X-Api-Key": api_key},
        timeout=httpx.Timeout(30.0, read=None),
        transport=PatientReads(httpx.HTTPTransport(), PATIENCE_S, notice_as(prog)),
    )


def notice_as(prog: str) -> Callable[[str], None]:
    """Prints a notice on stderr as ``prog`` does its errors ("shoal run-script: ...")."""
    return lambda text: print(f"{prog}: {text}", file=sys.stderr, flush=True)


class PatientReads(httpx.BaseTransport):
    """Asks a GET again while the server answers 503, as long as ``patience_s`` allows,
    pausing as its Retry-After says (at most MAX_PAUSE_S). A 503 means "not now, soon":
    the read models are catching up after a burst, or the message bus is reconnecting;
    a read is safe to repeat, and a user running `run-script --wait` wants the log, not
    exit 3 because the server was busy for a few seconds. Nothing else is repeated: a 503
    after a POST can mean the change was recorded. Says once on stderr that it waits."""

    def __init__(
        self, inner: httpx.BaseTransport, patience_s: float,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self._inner = inner
        self._patience_s = patience_s
        self._notice = notice or notice_as("shoal")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self._patience_s
        noticed = False
        while True:
            response = self._inner.handle_request(request)
            if request.method != "GET" or response.status_code != 503:
                return response
            pause = _retry_after(response)
            if time.monotonic() + pause > deadline:
                return response
            response.read()
            response.close()
            if not noticed:
                noticed = True
                self._notice(f"the server cannot answer yet ({_detail(response)}); trying again")
            time.sleep(pause)

    def close(self) -> None:
        self._inner.close()


def _retry_after(response: httpx.Response) -> float:
    """Seconds to pause before asking again: the server's Retry-After (in seconds), 1
    when it gives none or a date."""
    try:
        pause = float(response.headers.get("retry-after", "1"))
    except ValueError:
        pause = 1.0
    return min(max(pause, 0.0), MAX_PAUSE_S)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail) if detail else response.text[:200] or response.reason_phrase


def check(response: httpx.Response) -> httpx.Response:
    """Turn an error answer into the CLI's exit codes."""
    if response.status_code in (401, 403):
        fail(f"the server refused the API key ({response.status_code}: {_detail(response)})",
             EXIT_UNREACHABLE)
    if response.status_code >= 500:
        fail(f"the server failed ({response.status_code}: {_detail(response)})", EXIT_UNREACHABLE)
    if response.status_code >= 400:
        fail(_detail(response), EXIT_USAGE)
    return response


def request(c: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request; an unreachable server is exit 3 naming the URL."""
    try:
        return check(c.request(method, path, **kwargs))
    except httpx.TransportError as exc:
        fail(f"cannot reach the server at {c.base_url}: {exc}", EXIT_UNREACHABLE)


def sse(
    c: httpx.Client, path: str, last_event_id: str | None = None, until: str | None = None,
    prog: str = "shoal",
) -> Iterator[tuple[str, bytes]]:
    """(event, data) pairs of a Server-Sent Events stream, up to an event named ``until``.

    A stream that was open and is lost (the server restarts, a proxy drops it, it ends
    before ``until``) is opened again with the last `id:` it sent as Last-Event-ID, so
    nothing is skipped or repeated; for up to PATIENCE_S from the loss, saying once on
    stderr that it reconnects, then exit 3. A server that cannot be reached at the start
    is exit 3 at once."""
    state = _StreamState(last_event_id)
    ever_opened = False
    lost_at: float | None = None
    while True:
        try:
            for event, data in _sse_once(c, path, state):
                yield event, data
                if event == until:
                    return
            why = "the server ended the stream"
        except httpx.TransportError as exc:
            why = str(exc) or type(exc).__name__
        if state.answered:  # that attempt got through: this is a new loss
            ever_opened, lost_at = True, None
        if not ever_opened:
            fail(f"cannot reach the server at {c.base_url}: {why}", EXIT_UNREACHABLE)
        if lost_at is None:
            lost_at = time.monotonic()
            notice_as(prog)(f"lost the connection to {c.base_url} ({why}); reconnecting")
        elif time.monotonic() - lost_at > PATIENCE_S:
            fail(f"lost the connection to {c.base_url}: {why}", EXIT_UNREACHABLE)
        time.sleep(1.0)


class _StreamState:
    """Where a stream is: the last event id it sent, and whether the last attempt to
    open it was answered (a reconnect that got through starts the patience over)."""

    def __init__(self, last_event_id: str | None) -> None:
        self.last_event_id = last_event_id
        self.answered = False


def _sse_once(c: httpx.Client, path: str, state: _StreamState) -> Iterator[tuple[str, bytes]]:
    """One connection's (event, data) pairs; keeps ``state.last_event_id`` current."""
    state.answered = False
    headers = {"Last-Event-ID": state.last_event_id} if state.last_event_id else {}
    with c.stream("GET", path, headers=headers) as response:
        if response.status_code >= 400:
            response.read()
            check(response)
        state.answered = True
        event, data, ident = "message", b"", None
        for line in response.iter_lines():
            if not line:
                if data:
                    if ident is not None:
                        state.last_event_id = ident
                    yield event, data
                event, data, ident = "message", b"", None
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip().encode()
            elif line.startswith("id:"):
                ident = line[3:].strip()


def run_script(args: argparse.Namespace) -> int:
    """Queue a script; print the task id; with --wait stream the log and exit with the
    task's outcome (0 success, 1 anything else)."""
    if args.file is not None:
        try:
            body = Path(args.file).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"cannot read {args.file}: {exc.strerror}", EXIT_USAGE)
        except UnicodeDecodeError as exc:
            fail(f"{args.file} is not UTF-8 text (byte {exc.start} cannot be decoded)", EXIT_USAGE)
    else:
        body = args.script
    payload: dict[str, Any] = {"syntax": args.syntax, "script_body": body}
    if args.worker_pool:
        payload["worker_pool_id"] = args.worker_pool
    prog = f"shoal {args.command}"
    with client(args.server, args.api_key, prog) as c:
        task = request(c, "POST", "/api/tasks/script", json=payload).json()
        print(task["id"], flush=True)
        if not args.wait:
            return EXIT_OK
        state = "failed"
        for event, data in sse(c, f"/api/tasks/{task['id']}/log?follow=1", until="end", prog=prog):
            item = orjson.loads(data)
            if event == "end":
                state = item["state"]
                break
            stream = sys.stderr if item["stream"] == "stderr" else sys.stdout
            print(item["line"], file=stream, flush=True)
        return EXIT_OK if state == "success" else EXIT_FAILED


def events_tail(args: argparse.Namespace) -> int:
    """Print the audit log from --after on, one JSON object per line, then follow it."""
    prog = f"shoal {args.command}"
    with client(args.server, args.api_key, prog) as c:
        for _, data in sse(c, "/api/events/stream", str(args.after) if args.after else None,
                           prog=prog):
            print(data.decode(), flush=True)
    return EXIT_OK
