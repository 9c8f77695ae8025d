"""Task submissions are let into the application a few at a time; nothing else waits, and
a client still sending its body holds no place."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.http.intake import SubmissionGate, is_submission

Message = dict[str, Any]


@pytest.mark.parametrize(("method", "path", "gated"), [
    ("POST", "/api/tasks/script", True),
    ("POST", "/api/projects/3f2a/runs", True),
    ("POST", "/api/projects/3f2a/runs/", True),
    ("GET", "/api/tasks/script", False),
    ("POST", "/api/tasks/3f2a/cancel", False),
    ("POST", "/api/packages", False),
    ("POST", "/api/workers/3f2a/health-check", False),
    ("POST", "/api/projects", False),
])
def test_what_counts_as_a_submission(method: str, path: str, gated: bool) -> None:
    assert is_submission(method, path) is gated


class App:
    """Counts how many requests are inside at once; each stays until released."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.bodies: list[bytes] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await self.release.wait()
        self.inside -= 1
        await send({"type": "http.response.start", "status": 201})


def request(method: str, path: str, *parts: bytes) -> tuple[dict[str, Any], Any]:
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                for i, p in enumerate(parts)]

    async def receive() -> Message:
        return messages.pop(0)

    return {"type": "http", "method": method, "path": path}, receive


async def noop_send(message: Message) -> None:
    pass


def test_at_most_the_limit_of_submissions_is_inside_at_once() -> None:
    async def body() -> None:
        app = App()
        gate = SubmissionGate(app, limit=3)
        calls = [asyncio.create_task(gate(*request("POST", "/api/tasks/script", b"{}"), noop_send))
                 for _ in range(10)]
        await asyncio.sleep(0.05)
        assert app.inside == 3
        app.release.set()
        await asyncio.gather(*calls)
        assert app.most == 3 and len(app.bodies) == 10

    asyncio.run(body())


def test_other_requests_never_wait_for_a_place() -> None:
    async def body() -> None:
        app = App()
        gate = SubmissionGate(app, limit=1)
        held = asyncio.create_task(gate(*request("POST", "/api/tasks/script", b"{}"), noop_send))
        others = [asyncio.create_task(gate(*request(m, p, b"x"), noop_send))
                  for m, p in (("GET", "/api/tasks"), ("POST", "/api/packages"))]
        await asyncio.sleep(0.05)
        assert app.inside == 3, "the full gate held up neither the read nor the upload"
        app.release.set()
        await asyncio.gather(held, *others)

    asyncio.run(body())


def test_the_application_gets_the_whole_body_in_order() -> None:
    async def body() -> None:
        app = App()
        app.release.set()
        await SubmissionGate(app)(*request("POST", "/api/tasks/script", b'{"a": ', b"1", b"}"),
                                  noop_send)
        assert app.bodies == [b'{"a": 1}']

    asyncio.run(body())


def test_a_client_still_sending_its_body_holds_no_place() -> None:
    async def body() -> None:
        app = App()
        app.release.set()
        gate = SubmissionGate(app, limit=1)
        stalled = asyncio.Event()

        async def trickle() -> Message:
            await stalled.wait()  # the rest of the body never comes
            return {"type": "http.request", "body": b"", "more_body": False}

        slow = asyncio.create_task(gate({"type": "http", "method": "POST",
                                          "path": "/api/tasks/script"}, trickle, noop_send))
        await asyncio.sleep(0.01)
        await asyncio.wait_for(gate(*request("POST", "/api/tasks/script", b"{}"), noop_send), 1.0)
        assert app.bodies == [b"{}"]
        slow.cancel()

    asyncio.run(body())
