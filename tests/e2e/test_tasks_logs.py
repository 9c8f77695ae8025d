"""Task logs through the real server: complete and in order under load, streamed live
(SSE), long lines cut, and the server responsive while a chatty step runs."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.tasks_support import (
    OptionServer,
    events,
    lines_of,
    log,
    position,
    script,
    task,
    wait_task,
)

pytestmark = pytest.mark.e2e


def follow(
    srv: OptionServer, tid: str, on_line: Any = None, last_event_id: str | None = None
) -> tuple[list[dict[str, Any]], dict | None]:
    """Read the task's log as SSE until the `end` event: (lines, end data); each line
    with the `id` its message carried."""
    got: list[dict[str, Any]] = []
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    with srv.client() as c, c.stream(
        "GET", f"/api/tasks/{tid}/log", params={"follow": 1}, timeout=60, headers=headers
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = ident = None
        for raw in r.iter_lines():
            if raw.startswith("event: "):
                event = raw[len("event: "):]
            elif raw.startswith("id: "):
                ident = raw[len("id: "):]
            elif raw.startswith("data: "):
                data = orjson.loads(raw[len("data: "):])
                if event == "end":
                    return got, data
                got.append({**data, "id": ident})
                if on_line is not None:
                    on_line(data)
            elif not raw:
                event = None
    return got, None


def test_hundred_thousand_lines_arrive_complete_in_order_while_the_server_stays_responsive(
    srv: OptionServer,
) -> None:
    expected = [str(i) for i in range(1, 100_001)]
    streamed: dict[str, Any] = {}
    with srv.client() as c:
        before = position(c)
        t = script(c, "seq 1 100000")

        def reader() -> None:
            streamed["lines"], streamed["end"] = follow(srv, t["id"])

        thread = threading.Thread(target=reader)
        thread.start()
        slowest, samples_while_running = 0.0, 0
        try:
            while True:
                asked = time.monotonic()
                assert c.get("/api/health").status_code == 200
                took = time.monotonic() - asked
                state = task(c, t["id"])["state"]
                if state == "executing":
                    slowest = max(slowest, took)
                    samples_while_running += 1
                if state not in ("queued", "executing"):
                    break
                time.sleep(0.02)
        finally:
            thread.join(60)
        done = task(c, t["id"])
        text = log(c, t["id"])
        own = [e for e in events(c, after=before) if e["aggregate_id"] == t["id"]]
        grew = position(c) - before

    assert done["state"] == "success"
    assert lines_of(text, "Run script") == expected, "the stored log has every line, in order"
    assert samples_while_running >= 1 and slowest < 1.0, f"health took {slowest:.2f}s during the run"
    assert streamed["end"] == {"state": "success"}
    assert [x["text"] for x in streamed["lines"] if x["stream"] == "stdout"] == expected
    assert all(x["step"] == "Run script" for x in streamed["lines"] if x["stream"] == "stdout")
    # The task's own audit events stay few; log lines are batched, not one event each.
    assert len(own) <= 10, [e["type"] for e in own]
    assert not any("TaskLog" in e["type"] for e in own)
    assert grew < 2000, f"{grew} store positions for one 100,000-line step"


def test_follow_streams_lines_while_the_task_runs_then_ends(srv: OptionServer) -> None:
    states_seen: list[str] = []
    with srv.client() as c:
        t = script(c, "echo first; sleep 1; echo second >&2; sleep 0.5; exit 3")

        def on_line(data: dict[str, Any]) -> None:
            if data["text"] == "first":
                states_seen.append(task(c, t["id"])["state"])

        lines, end = follow(srv, t["id"], on_line)
        whole = log(c, t["id"])
    assert states_seen == ["executing"], "the first line arrived while the task still ran"
    assert end == {"state": "failed"}
    texts = [(x["stream"], x["text"]) for x in lines if x["step"] == "Run script"]
    assert ("stdout", "first") in texts and ("stderr", "second") in texts
    assert texts.index(("stdout", "first")) < texts.index(("stderr", "second"))
    # Each SSE line carries the same text the plain log shows, in the same order.
    assert [x["line"] for x in lines] == whole.splitlines()
    # Following a task that has already ended replays everything and ends at once.
    again, end_again = follow(srv, t["id"])
    assert [x["line"] for x in again] == whole.splitlines() and end_again == {"state": "failed"}


def test_a_follow_resumes_after_its_last_event_id(srv: OptionServer) -> None:
    """A client that lost the stream reconnects with the last id it got and receives the
    lines after it: none skipped, none twice. An id that is not one of ours starts over."""
    with srv.client() as c:
        t = wait_task(c, script(c, "for i in 1 2 3 4 5; do echo line-$i; done")["id"])
    whole, end = follow(srv, t["id"])
    texts = [x["text"] for x in whole]
    third = texts.index("line-3")
    rest, rest_end = follow(srv, t["id"], last_event_id=whole[third]["id"])
    assert [x["text"] for x in rest] == texts[third + 1:] and rest_end == end == {"state": "success"}
    assert [x["id"] for x in rest] == [x["id"] for x in whole[third + 1:]]
    for bogus in ("", "x", "12", "1.2.3", "-1.0", "9" * 40 + ".0"):
        again, _ = follow(srv, t["id"], last_event_id=bogus)
        assert [x["text"] for x in again] == texts, bogus


def test_a_line_over_64_kib_is_cut_with_a_marker(srv: OptionServer) -> None:
    body = "import sys\nprint('a' * 70000)\nprint('short')\nsys.stdout.write('b' * 200000)\n"
    with srv.client() as c:
        t = wait_task(c, script(c, body, syntax="python")["id"])
        out = lines_of(log(c, t["id"]), "Run script")
    assert t["state"] == "success"
    assert len(out) == 3, [x[:20] for x in out]
    first, short, last = out
    assert short == "short"
    for cut, char in ((first, "a"), (last, "b")):
        assert cut.startswith(char * 1000) and "line truncated" in cut
        assert 60_000 <= len(cut.encode()) <= 66_000, len(cut.encode())


def test_binary_output_is_logged_and_the_read_models_go_on(srv: OptionServer) -> None:
    # NULs (find -print0) and bytes that are not UTF-8. PostgreSQL's text holds no NUL: a
    # line it refused stopped every projection at that event, and nothing after it (this
    # task's end, the next task) was ever seen again. There a NUL reads as U+FFFD.
    body = "printf 'a\\0b\\n'; printf '\\377\\376\\n'; echo after"
    with srv.client() as c:
        t = wait_task(c, script(c, body)["id"])
        out = lines_of(log(c, t["id"]), "Run script")
        later = wait_task(c, script(c, "echo next")["id"])
    assert t["state"] == "success" and later["state"] == "success"
    assert out[0] in ("a\0b", "a\ufffdb") and out[1:] == ["\ufffd\ufffd", "after"]


def test_logs_of_unknown_tasks_are_404(srv: OptionServer) -> None:
    with srv.client() as c:
        for params in ({}, {"follow": 1}):
            r = c.get(f"/api/tasks/{uuid.uuid4()}/log", params=params)
            assert r.status_code == 404 and "not found" in r.json()["detail"]
    r = httpx.get(f"{srv.url}/api/tasks/{uuid.uuid4()}/log")
    assert r.status_code == 401
