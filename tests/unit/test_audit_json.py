"""The audit log's JSON for an event: written by orjson directly when nothing in the
event needs redacting, and exactly the same text as the redacting walk gives."""

from __future__ import annotations

import orjson

from domain.app import Shoal
from domain.configuration import Smtp
from domain.keys import Permission
from domain.plan import StepState
from domain.process import Syntax
from projections.audit import REDACTED, data_json, event_data, to_json
from tests.unit.support import ALICE, events_after


def busy_log(app: Shoal) -> list[object]:
    """Events of most kinds, some of them carrying secrets."""
    app.create_pool(name="Linux", description="build boxes", actor=ALICE)
    app.create_key(name="ci", permissions=(Permission.TASK_VIEW,), actor=ALICE)
    app.configure_smtp(
        smtp=Smtp(host="mail", port=25, sender="s@x", username="u", password="hunter2"),
        actor=ALICE,
    )
    task = app.queue_script(syntax=Syntax.BASH, script_body='echo \'"password": no\'',
                            actor=ALICE).aggregate

    def run(t: object) -> None:
        t.start("n1", ALICE)  # type: ignore[attr-defined]
        t.assign("Run script", None, None, "built-in worker", ALICE)  # type: ignore[attr-defined]
        t.mark_started("Run script", 42, ALICE)  # type: ignore[attr-defined]
        t.finish_step("Run script", StepState.SUCCESS, 0, "", ALICE)  # type: ignore[attr-defined]
        t.finish_if_done(ALICE)  # type: ignore[attr-defined]

    app.update_task(task.id, run)
    return events_after(app, 0)


def test_every_event_gets_the_same_text_either_way(app: Shoal) -> None:
    events = busy_log(app)
    assert len(events) > 15
    for event in events:
        assert data_json(event) == to_json(event_data(event)), type(event).__qualname__


def test_secrets_are_redacted_on_the_fast_way_too(app: Shoal) -> None:
    texts = [data_json(e) for e in busy_log(app)]
    joined = "\n".join(texts)
    assert "hunter2" not in joined
    hashes = [orjson.loads(t)["secret_hash"] for t in texts if '"secret_hash"' in t]
    assert hashes and set(hashes) == {REDACTED}
    # A script that merely mentions such a key keeps its text.
    assert any('\\"password\\": no' in t for t in texts)
