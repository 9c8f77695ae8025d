"""The CLI's HTTP client asks a read again while the server answers 503 ("try again
shortly"), within its patience, and never repeats anything else."""

from __future__ import annotations

import httpx

from adapters.remote import PatientReads


def answers(*statuses: int, retry_after: str = "0") -> tuple[httpx.MockTransport, list[str]]:
    """A server that answers ``statuses`` in turn (the last one from then on); the
    methods it was asked with, in order."""
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.method)
        status = statuses[min(len(asked), len(statuses)) - 1]
        headers = {"Retry-After": retry_after} if status == 503 else {}
        return httpx.Response(status, json={"detail": f"answer {len(asked)}"}, headers=headers)

    return httpx.MockTransport(handle), asked


def client(inner: httpx.BaseTransport, patience_s: float, notices: list[str]) -> httpx.Client:
    return httpx.Client(base_url="http://shoal.test",
                        transport=PatientReads(inner, patience_s, notices.append))


def test_a_read_answered_503_is_asked_again_until_it_is_answered() -> None:
    inner, asked = answers(503, 503, 200)
    notices: list[str] = []
    with client(inner, 10.0, notices) as c:
        r = c.get("/api/tasks/x/log")
    assert r.status_code == 200 and r.json() == {"detail": "answer 3"}
    assert asked == ["GET", "GET", "GET"]
    assert len(notices) == 1 and "answer 1" in notices[0], "says once why it waits"


def test_a_write_answered_503_is_never_repeated() -> None:
    # A 503 after a POST can mean the change was recorded: sending it again could queue
    # a second task.
    inner, asked = answers(503, 201)
    notices: list[str] = []
    with client(inner, 10.0, notices) as c:
        r = c.post("/api/tasks/script", json={})
    assert r.status_code == 503 and asked == ["POST"] and notices == []


def test_patience_runs_out_with_the_last_503() -> None:
    inner, asked = answers(503, retry_after="0.2")
    with client(inner, 0.5, []) as c:
        r = c.get("/api/tasks")
    assert r.status_code == 503 and r.json()["detail"].startswith("answer")
    assert 2 <= len(asked) <= 4, asked


def test_no_patience_answers_the_first_503() -> None:
    inner, asked = answers(503, 200)
    with client(inner, 0.0, []) as c:
        assert c.get("/api/tasks").status_code == 503
    assert asked == ["GET"]


def test_other_answers_pass_through_untouched() -> None:
    inner, asked = answers(404)
    with client(inner, 10.0, []) as c:
        assert c.get("/api/tasks/nope").status_code == 404
    assert asked == ["GET"]
