"""The built-in worker's pipe (agent/pipe.py): frames survive any split of the byte stream,
and everything decoded from the other side is checked before it is used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.pipe import (
    MAX_FRAME,
    BrokenPipeStream,
    FrameReader,
    MalformedFrame,
    decode,
    encode,
    lines_from_wire,
    lines_to_wire,
    log_chunks,
    number,
    request_from_wire,
    request_to_wire,
    result_from_wire,
    result_to_wire,
    text,
)
from agent.ports import LogLine, PackageFile, StepRequest, StepResult


def trip(frame: dict[str, Any]) -> dict[str, Any]:
    """Through the encoder and a reader, as across the pipe."""
    (body,) = FrameReader().feed(encode(frame))
    return decode(body)


FRAMES = [{"op": "ready", "pid": 1, "protocol": 1}, {"op": "log", "q": 2, "lines": []},
          {"op": "x", "text": "é\n\0" * 1000}, {"op": "answer", "q": 3, "ok": True}]


def test_frames_come_back_whole_however_the_stream_is_split() -> None:
    stream = b"".join(encode(f) for f in FRAMES)
    for size in (1, 3, 4, 5, 7, 64, len(stream)):
        reader = FrameReader()
        got = []
        for i in range(0, len(stream), size):
            got += [decode(body) for body in reader.feed(stream[i:i + size])]
        assert got == FRAMES, f"split every {size} bytes"
        assert reader.pending == 0


def test_a_length_past_the_limit_breaks_the_stream() -> None:
    reader = FrameReader(max_frame=100)
    assert reader.feed(encode({"op": "ok"})) != []
    with pytest.raises(BrokenPipeStream, match="101 bytes"):
        reader.feed((101).to_bytes(4, "big") + b"{")
    with pytest.raises(BrokenPipeStream):
        FrameReader().feed((MAX_FRAME + 1).to_bytes(4, "big"))


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b'"op"', b'{"op": 3}', b'{"id": 1}', b"\xff"])
def test_a_body_that_is_not_an_object_with_an_op_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode(body)


def test_fields_are_checked_by_type() -> None:
    frame = {"op": "started", "id": 3, "pid": True, "name": "a", "n": "3"}
    assert number(frame, "id") == 3 and text(frame, "name") == "a"
    for key in ("pid", "n", "missing"):
        with pytest.raises(MalformedFrame, match=key):
            number(frame, key)
    with pytest.raises(MalformedFrame, match="id"):
        text(frame, "id")


def _request(**kw: Any) -> StepRequest:
    base: dict[str, Any] = {
        "task_id": "t-1", "step_name": "deploy [eu]", "syntax": "python", "script": "print('é')\n",
        "env": {"SHOAL_TASK_ID": "t-1", "A": "b=c"}, "work_root": Path("/srv/work"),
    }
    return StepRequest(**{**base, **kw})


@pytest.mark.parametrize("request_", [
    _request(),
    _request(timeout_s=2.5, run_as_user="deploy", max_line_bytes=10, max_log_bytes=0,
             packages=(PackageFile("site", "1.0", "ab" * 32, "site.tar.gz"),)),
    _request(timeout_s=3),
])
def test_a_step_request_survives_the_trip(request_: StepRequest) -> None:
    wire = trip({"op": "run", "request": request_to_wire(request_)})["request"]
    assert request_from_wire(wire) == request_


def test_a_relative_work_root_travels_as_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert request_to_wire(_request(work_root=Path("work")))["work_root"] == str(tmp_path / "work")


@pytest.mark.parametrize(("change", "why"), [
    ({"syntax": "perl"}, "unknown script syntax"),
    ({"timeout_s": 0}, "timeout_s must be positive"),
    ({"timeout_s": "5"}, "timeout_s"),
    ({"timeout_s": True}, "timeout_s"),
    ({"env": {"A": 1}}, "env"),
    ({"env": {"": "x"}}, "invalid environment variable"),
    ({"env": []}, "env"),
    ({"packages": [["a", "b", "c"]]}, "packages"),
    ({"packages": [["a", "b", "c", 4]]}, "packages"),
    ({"script": None}, "script"),
    ({"max_log_bytes": 1.5}, "max_log_bytes"),
    ({"run_as_user": 0}, "run_as_user"),
    ({"task_id": None}, "task_id"),
])
def test_a_bad_step_request_is_refused(change: dict[str, Any], why: str) -> None:
    wire = {**request_to_wire(_request()), **change}
    with pytest.raises(MalformedFrame, match=why):
        request_from_wire(wire)


def test_a_step_request_with_a_field_missing_or_not_an_object_is_refused() -> None:
    wire = request_to_wire(_request())
    del wire["script"]
    with pytest.raises(MalformedFrame, match="no script"):
        request_from_wire(wire)
    with pytest.raises(MalformedFrame, match="object"):
        request_from_wire([wire])


def test_log_lines_keep_their_time_stream_and_text() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    lines = [LogLine(at, "stdout", "plain"), LogLine(at + timedelta(seconds=1), "stderr", "é \x1b[0m\0"),
             LogLine(at.astimezone(timezone(timedelta(hours=2))), "system", "")]
    back = lines_from_wire(trip({"op": "log", "lines": lines_to_wire(lines)})["lines"])
    assert back == lines
    assert all(line.at.utcoffset() is not None for line in back)


@pytest.mark.parametrize("wire", [
    None, [["2030-01-01T00:00:00+00:00", "stdout"]], [["yesterday", "stdout", "x"]],
    [["2030-01-01T00:00:00+00:00", "stdin", "x"]], [["2030-01-01T00:00:00+00:00", "stdout", 5]],
    [["2030-01-01T00:00:00", "stdout", "naive"]], [5],
])
def test_bad_log_lines_are_refused(wire: object) -> None:
    with pytest.raises(MalformedFrame):
        lines_from_wire(wire)


def test_a_large_batch_goes_in_several_frames_in_order() -> None:
    at = datetime.now(UTC)
    lines = [LogLine(at, "stdout", f"{i:06d}" + "x" * 1000) for i in range(3000)]
    chunks = list(log_chunks(lines, limit=100_000))
    assert len(chunks) > 20 and all(len(c) <= 100 for c in chunks)
    assert [line for c in chunks for line in c] == lines
    small = lines[:5]
    assert list(log_chunks(small, limit=100_000)) == [small]
    huge = [LogLine(at, "stdout", "y" * 500), LogLine(at, "stdout", "z")]
    assert [len(c) for c in log_chunks(huge, limit=100)] == [1, 1], "a line over the limit goes alone"
    assert list(log_chunks([], limit=100)) == []


@pytest.mark.parametrize("result", [
    StepResult("success", 0, ""), StepResult("failed", None, "killed by signal SIGKILL"),
    StepResult("timed_out", 143, "timed out after 1s"), StepResult("cancelled", None, "cancelled"),
])
def test_a_result_survives_the_trip(result: StepResult) -> None:
    assert result_from_wire(trip({"op": "finished", **result_to_wire(result)})) == result


@pytest.mark.parametrize("frame", [
    {"outcome": "won", "exit_code": 0, "reason": ""}, {"outcome": "success", "exit_code": "0", "reason": ""},
    {"outcome": "success", "exit_code": 0}, {"outcome": "failed", "exit_code": False, "reason": "x"},
])
def test_a_bad_result_is_refused(frame: dict[str, Any]) -> None:
    with pytest.raises(MalformedFrame):
        result_from_wire(frame)
