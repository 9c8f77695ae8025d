"""The wire protocol between server and agents: round trips, strict decoding, signatures."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime

import orjson
import pytest

from domain.messages import (
    CancelStep,
    ExecAnswer,
    ExecStep,
    HealthAnswer,
    HealthCheck,
    Heartbeat,
    PackageRef,
    ProtocolError,
    Report,
    decode_heartbeat,
    decode_instruction,
    decode_report,
    encode,
)
from domain.signing import (
    SigningError,
    load_private_key,
    new_private_key_pem,
    parse_public_key,
    public_key_text,
    sign,
    verify,
)

EXEC = ExecStep(
    worker_id="w1", task_id="t1", step="Deploy", assignment=7, syntax="bash", script="echo hi",
    env={"SHOAL_TASK_ID": "t1"}, timeout_s=30.0, max_log_bytes=1000, expires_at=1e10,
)


@pytest.mark.parametrize("message", [
    EXEC, CancelStep("w1", "t1", "Deploy", 7), HealthCheck("w1", "df -h", 10.0, issued_at=5.0),
])
def test_instructions_round_trip(message: object) -> None:
    assert decode_instruction(encode(message)) == message


@pytest.mark.parametrize("message", [
    ExecStep(worker_id="w1", task_id="t1", step="Deploy", assignment=7, syntax="bash",
             script="echo hi", env={"A": "1", "B": "2"}, timeout_s=None, max_log_bytes=1000,
             expires_at=1e10, packages=(PackageRef("web", "1.0", "ab" * 32, "web.tgz"),)),
    CancelStep("w1", "t1", "Deploy", 7), HealthCheck("w1", "df -h", 10.0, issued_at=5.0),
    ExecAnswer(accepted=False, reason="busy"), HealthAnswer("healthy", "ok"),
    Report("w1", "t1", "Deploy", 7, "log", 3, lines=(("t", "stdout", "hi"),)),
    Heartbeat("w1", running=2, at=5.0),
])
def test_messages_encode_as_their_fields_in_order(message: object) -> None:
    assert encode(message) == orjson.dumps(asdict(message))  # type: ignore[call-overload]


def test_reports_and_heartbeats_round_trip() -> None:
    report = Report("w1", "t1", "Deploy", 7, "log", 3,
                    lines=(("2026-12-07T05:00:00.123+00:00", "stdout", "hi"),))
    beat = Heartbeat("w1", running=2, at=5.0)
    assert decode_report(encode(report)) == report
    assert decode_heartbeat(encode(beat)) == beat
    assert report.message_id() == "t1:Deploy:7:3"
    started = Report("w1", "t1", "Deploy", 7, "started", 0, pid=9,
                     started_at="2026-12-07T05:00:00.123456+00:00")
    assert decode_report(encode(started)) == started
    assert started.started_time == datetime(2026, 12, 7, 5, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(("data", "error"), [
    (b"not json", "not JSON"),
    (b"[1]", "JSON object"),
    (b'{"kind": "format-disk"}', "unknown instruction kind"),
    (b'{"kind": "cancel", "worker_id": "w", "task_id": "t", "step": "s", "assignment": true}',
     "'assignment' has the wrong type"),
    (b'{"kind": "cancel", "worker_id": "w", "task_id": "t", "step": "s"}', "'assignment' is missing"),
    (orjson.dumps({**orjson.loads(encode(EXEC)), "capacity": 0}), "'capacity' is at least 1"),
    (orjson.dumps({**orjson.loads(encode(EXEC)), "capacity": "8"}), "'capacity' has the wrong type"),
])
def test_malformed_instructions_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_instruction(data)


@pytest.mark.parametrize(("change", "error"), [
    ({"kind": "exploded"}, "unknown report kind"),
    ({"kind": "finished", "outcome": "great"}, "unknown outcome"),
    ({"lines": [["t", "stdout"]]}, "a log line is"),
    ({"kind": "started", "started_at": "yesterday"}, "'started_at' is an ISO 8601 time"),
    ({"kind": "started", "started_at": "2026-12-07T05:00:00"}, "with an offset"),
    ({"kind": "started", "started_at": 1765083600}, "'started_at' has the wrong type"),
    ({"lines": [["t", "stdout", "hi"]]}, "a log line's time is an ISO 8601 time"),
    ({"lines": [["2026-12-07T05:00:00", "stdout", "hi"]]}, "with an offset"),
    # Past what a 64-bit column holds: recorded, it would stop every projection.
    ({"kind": "finished", "outcome": "failed", "exit_code": 2**63}, "'exit_code' is out of range"),
    ({"kind": "finished", "outcome": "failed", "exit_code": 2**32}, "'exit_code' is out of range"),
    ({"kind": "finished", "outcome": "failed", "exit_code": -(2**31) - 1}, "'exit_code' is out"),
    ({"kind": "started", "pid": 2**64 - 1}, "'pid' is out of range"),
    ({"kind": "started", "pid": -1}, "'pid' is out of range"),
    ({"assignment": 2**63}, "'assignment' is out of range"),
    ({"assignment": -1}, "'assignment' is out of range"),
    ({"seq": 2**63}, "'seq' is out of range"),
    ({"kind": "artifact", "name": "a", "sha256": "ab" * 32, "size": 2**63, "parts": [1]},
     "'size' is out of range"),
    ({"kind": "artifact", "name": "a", "sha256": "ab" * 32, "size": 1, "parts": [2**63]},
     "'parts' holds stream sequences"),
    # Beyond 64 bits JSON numbers decode as floats.
    ({"kind": "finished", "outcome": "failed", "exit_code": 2**64}, "'exit_code' has the wrong type"),
])
def test_malformed_reports_are_refused(change: dict[str, object], error: str) -> None:
    good = orjson.loads(encode(Report("w1", "t1", "s", 1, "log", 0)))
    # orjson writes no integer past 64 bits; the stdlib does, as an agent's JSON might.
    with pytest.raises(ProtocolError, match=error):
        decode_report(json.dumps({**good, **change}).encode())


@pytest.mark.parametrize(("kind", "fields"), [
    ("finished", {"outcome": "failed", "exit_code": 2**32 - 1}),  # a Windows exit code
    ("finished", {"outcome": "cancelled", "exit_code": -(2**31)}),
    ("finished", {"outcome": "failed", "exit_code": -9}),  # killed by a signal
    ("started", {"pid": 2**32 - 1, "started_at": "2026-12-07T05:00:00-05:00"}),
    ("log", {"lines": (("2026-12-07T05:00:00Z", "stderr", "x"),)}),
])
def test_reports_at_the_edges_of_their_ranges_are_taken(kind: str, fields: dict[str, object]) -> None:
    report = Report("w1", "t1", "s", 2**63 - 1, kind, 2**63 - 1, **fields)  # type: ignore[arg-type]
    assert decode_report(encode(report)) == report


def test_a_signature_verifies_only_the_signed_bytes_with_the_pinned_key() -> None:
    key = load_private_key(new_private_key_pem())
    other = load_private_key(new_private_key_pem())
    pinned = parse_public_key(public_key_text(key))
    body = encode(EXEC)
    signature = sign(key, body)

    assert verify(pinned, body, signature)
    assert not verify(pinned, body.replace(b"echo hi", b"rm -rf /"), signature)
    assert not verify(pinned, body, sign(other, body))
    assert not verify(pinned, body, None)
    assert not verify(pinned, body, "not base64!")


@pytest.mark.parametrize("text", ["rsa:abc", "ed25519:!!!", "ed25519:AAAA"])
def test_malformed_server_keys_are_refused(text: str) -> None:
    with pytest.raises(SigningError):
        parse_public_key(text)
