"""Steps that run inside the server and never touch a worker: manual intervention, email
(to a real SMTP server), import certificate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.tasks_support import (
    Inbox,
    OptionServer,
    events,
    log,
    project,
    run,
    self_signed,
    sh,
    smtp_server,
    step,
    wait_step,
    wait_task,
)
from tests.helpers import rid

pytestmark = pytest.mark.e2e


@pytest.fixture
def inbox(srv: OptionServer) -> Iterator[Inbox]:
    """A real SMTP server the Shoal server is configured to send through."""
    with smtp_server() as box, srv.client() as c:
        r = c.put("/api/configuration/smtp", json={
            "host": "127.0.0.1", "port": box.port, "sender": "shoal@example.test", "starttls": False})
        assert r.status_code == 200, r.text
        try:
            yield box
        finally:
            assert c.put("/api/configuration/smtp", json={"host": None}).status_code == 200


@pytest.fixture
def admin(srv: OptionServer) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


def ran_in_server(c: httpx.Client, t: dict[str, Any], name: str) -> None:
    """The step ran in the server: no worker, no `Running on` line, no assignment."""
    s = step(t, name)
    assert s["worker_id"] is None and s["worker_name"] is None and s["exit_code"] is None
    assert f"{name} | Running on" not in log(c, t["id"])
    assert not [e for e in events(c, "Task.StepAssigned")
                if e["aggregate_id"] == t["id"] and e["data"]["step"] == name]


def gated(c: httpx.Client) -> dict[str, Any]:
    """A run waiting at its manual intervention (`gate`), between two script steps."""
    p = project(c, rid("gated"), [
        sh("before", "echo before"),
        {"name": "gate", "action": "manual_intervention", "instructions": "Check the canary"},
        sh("after", "echo after"),
    ])
    return wait_step(c, run(c, p["id"])["id"], "gate", ("awaiting_intervention",))


def test_approved_intervention_continues_and_names_who_decided(
    srv: OptionServer, admin: httpx.Client
) -> None:
    key = admin.post("/api/api-keys", json={"name": rid("approver"),
                                            "permissions": ["TaskView", "TaskCreate"]}).json()
    t = gated(admin)
    assert t["state"] == "executing" and step(t, "after")["state"] == "pending"
    assert admin.post(f"/api/tasks/{t['id']}/interventions/after",
                      json={"decision": "approve"}).status_code == 409
    with srv.client(key["key"]) as approver:
        r = approver.post(f"/api/tasks/{t['id']}/interventions/gate",
                          json={"decision": "approve", "note": "canary is green"})
        assert r.status_code == 200, r.text
        twice = approver.post(f"/api/tasks/{t['id']}/interventions/gate", json={"decision": "reject"})
    assert twice.status_code == 409 and twice.json()["detail"]
    done = wait_task(admin, t["id"])
    text = log(admin, t["id"])
    assert done["state"] == "success"
    assert [s["state"] for s in done["steps"]] == ["success", "success", "success"]
    gate = step(done, "gate")
    assert key["name"] in gate["reason"] and "canary is green" in gate["reason"]
    assert "Check the canary" in text
    ran_in_server(admin, done, "gate")
    decided = [e for e in events(admin, "Task.InterventionDecided") if e["aggregate_id"] == t["id"]]
    assert len(decided) == 1
    assert decided[0]["actor"] == {"kind": "api_key", "id": key["id"], "name": key["name"]}


def test_rejected_intervention_fails_the_task(admin: httpx.Client) -> None:
    t = gated(admin)
    r = admin.post(f"/api/tasks/{t['id']}/interventions/gate", json={"decision": "reject", "note": "no"})
    assert r.status_code == 200, r.text
    done = wait_task(admin, t["id"])
    assert done["state"] == "failed"
    assert [s["state"] for s in done["steps"]] == ["success", "failed", "skipped"]
    assert "reject" in step(done, "gate")["reason"].lower()
    assert "after" not in [line.split(" | ")[-1] for line in log(admin, t["id"]).splitlines()]


def test_cancelling_a_task_that_waits_for_an_intervention(admin: httpx.Client) -> None:
    t = gated(admin)
    assert admin.post(f"/api/tasks/{t['id']}/cancel").status_code == 200
    done = wait_task(admin, t["id"])
    assert done["state"] == "cancelled" and step(done, "gate")["state"] == "cancelled"
    assert step(done, "after")["state"] != "success"
    late = admin.post(f"/api/tasks/{t['id']}/interventions/gate", json={"decision": "approve"})
    assert late.status_code == 409


def test_email_step_sends_one_message(srv: OptionServer, admin: httpx.Client, inbox: Inbox) -> None:
    subject = rid("Deployed")
    p = project(admin, rid("mailer"), [{"name": "tell", "action": "email", "email": {
        "to": ["ops@example.test", "dev@example.test"], "subject": subject, "body": "All good."}}])
    done = wait_task(admin, run(admin, p["id"])["id"])
    text = log(admin, done["id"])
    assert done["state"] == "success", text
    (message,) = inbox.messages
    assert sorted(message.rcpt_tos) == ["dev@example.test", "ops@example.test"]
    assert message.mail_from == "shoal@example.test"
    content = message.content.decode()
    assert f"Subject: {subject}" in content and "All good." in content
    ran_in_server(admin, done, "tell")


def test_smtp_password_is_never_shown(admin: httpx.Client) -> None:
    secret = rid("hunter2")
    r = admin.put("/api/configuration/smtp", json={
        "host": "127.0.0.1", "port": 2525, "sender": "s@example.test", "username": "u",
        "password": secret, "starttls": True})
    try:
        assert r.status_code == 200, r.text
        shown = admin.get("/api/configuration/smtp")
        assert shown.json()["has_password"] is True and shown.json()["host"] == "127.0.0.1"
        assert secret not in r.text + shown.text
        assert secret not in admin.get("/api/events", params={"limit": 1000}).text
    finally:
        admin.put("/api/configuration/smtp", json={"host": None})
    cleared = admin.get("/api/configuration/smtp").json()
    assert cleared["host"] is None and cleared["has_password"] is False


def test_email_without_smtp_fails_with_a_message(admin: httpx.Client) -> None:
    assert admin.get("/api/configuration/smtp").json()["host"] is None
    p = project(admin, rid("unsent"), [{"name": "tell", "action": "email",
                                        "email": {"to": ["ops@example.test"], "subject": "s", "body": "b"}}])
    done = wait_task(admin, run(admin, p["id"])["id"])
    s = step(done, "tell")
    assert done["state"] == "failed" and s["state"] == "failed"
    assert "smtp" in s["reason"].lower() and "configur" in s["reason"].lower()


def test_import_certificate_names_subject_and_thumbprint(admin: httpx.Client) -> None:
    cert = self_signed(rid("e2e") + ".example.test")
    p = project(admin, rid("certs"), [{"name": "import", "action": "import_certificate",
                                       "certificate": {"name": "web", "pem": cert.pem}}])
    done = wait_task(admin, run(admin, p["id"])["id"])
    s = step(done, "import")
    assert done["state"] == "success" and s["state"] == "success"
    assert cert.subject_cn in s["reason"]
    assert cert.sha256.lower() in s["reason"].lower().replace(":", "")
    ran_in_server(admin, done, "import")


def test_a_bad_pem_fails_the_step_clearly(admin: httpx.Client) -> None:
    bad = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    p = project(admin, rid("badcert"), [{"name": "import", "action": "import_certificate",
                                         "certificate": {"name": "junk", "pem": bad}}])
    done = wait_task(admin, run(admin, p["id"])["id"])
    s = step(done, "import")
    assert done["state"] == "failed" and s["state"] == "failed"
    assert "certificate" in s["reason"].lower() and "not" in s["reason"].lower()


def test_a_private_key_in_the_pem_is_not_stored(admin: httpx.Client) -> None:
    cert = self_signed(rid("keyed") + ".example.test")
    # Base64 of the DER bytes that hold the private scalar (not a header all keys share).
    secret = "".join(cert.key_pem.splitlines()[1:-1])[48:88]
    p = project(admin, rid("keyed"), [{"name": "import", "action": "import_certificate",
                                       "certificate": {"name": "with-key", "pem": cert.pem + cert.key_pem}}])
    done = wait_task(admin, run(admin, p["id"])["id"])
    s = step(done, "import")
    assert done["state"] == "success" and cert.sha256 in s["reason"]
    everything = orjson.dumps(events(admin)).decode().replace("\\n", "")
    assert "PRIVATE KEY" not in everything and secret not in everything, (
        "the private key was stored in the event log")
    stored = admin.get(f"/api/projects/{p['id']}").text.replace("\\n", "")
    assert "PRIVATE KEY" not in stored and secret not in stored, (
        "the private key is kept in the project's process")
