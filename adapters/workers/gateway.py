"""Instructions to agents, signed: exec (request/reply to a listening agent, or the
JetStream work queue of a polling one), cancel and health (request/reply)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.nats import subjects
from adapters.nats.bus import BusError, NatsBus, NoReply
from domain.messages import (
    CancelStep,
    ExecStep,
    HealthAnswer,
    HealthCheck,
    ProtocolError,
    decode_exec_answer,
    decode_health_answer,
    encode,
)
from domain.signing import SIGNATURE_HEADER, sign
from domain.workers import CommsStyle

log = logging.getLogger("shoal.workers")

# A listening agent answers at once (it runs the step after answering), so a slow answer
# means a sick agent: better to give the step to another worker.
EXEC_ANSWER_S = 5.0
CANCEL_ANSWER_S = 3.0


class WorkerUnavailable(Exception):
    """The worker could not take the instruction; the message says why. ``offline``: it
    did not answer at all (as opposed to answering no, e.g. at capacity)."""

    def __init__(self, message: str, offline: bool = True) -> None:
        super().__init__(message)
        self.offline = offline


@dataclass(frozen=True)
class Sent:
    """Where an exec instruction went: for a polling agent, the work-queue sequence
    (so it can be withdrawn while it waits)."""

    queued_seq: int | None = None


class WorkerGateway:
    """Signs and sends instructions."""

    def __init__(self, bus: NatsBus, key: Ed25519PrivateKey) -> None:
        self.bus = bus
        self.key = key

    def _signed(self, message: object) -> tuple[bytes, dict[str, str]]:
        body = encode(message)
        return body, {SIGNATURE_HEADER: sign(self.key, body)}

    async def exec(self, comms_style: CommsStyle, step: ExecStep) -> Sent:
        """Hand a step to its worker. Listening: the agent must answer now. Polling: the
        instruction waits in the worker's queue. Raises WorkerUnavailable."""
        body, headers = self._signed(step)
        worker = step.worker_id
        if comms_style is CommsStyle.POLLING:
            msg_id = f"{step.task_id}:{step.step}:{step.assignment}"
            try:
                seq = await self.bus.js_publish(subjects.work(worker), body, msg_id, headers)
            except BusError as exc:
                raise WorkerUnavailable(f"could not queue the step for the worker: {exc}") from None
            return Sent(queued_seq=seq)
        if comms_style is not CommsStyle.LISTENING:
            raise WorkerUnavailable(f"a {comms_style.value} worker has no agent to send to")
        try:
            reply = await self.bus.request(subjects.agent_exec(worker), body, EXEC_ANSWER_S, headers)
        except NoReply as exc:
            raise WorkerUnavailable(f"the agent did not answer ({exc.reason})") from None
        except BusError as exc:
            raise WorkerUnavailable(str(exc)) from None
        try:
            answer = decode_exec_answer(reply.data)
        except ProtocolError as exc:
            raise WorkerUnavailable(f"the agent's answer was not understood: {exc}") from None
        if not answer.accepted:
            raise WorkerUnavailable(f"the agent refused the step: {answer.reason}", offline=False)
        return Sent()

    async def withdraw(self, sent: Sent) -> bool:
        """Take a queued instruction back before its polling agent pulled it."""
        if sent.queued_seq is None:
            return False
        return await self.bus.delete_message(subjects.WORK_STREAM, sent.queued_seq)

    async def cancel(self, cancel: CancelStep) -> bool:
        """Ask the agent to stop the step; False when it did not confirm."""
        body, headers = self._signed(cancel)
        try:
            await self.bus.request(subjects.agent_cancel(cancel.worker_id), body, CANCEL_ANSWER_S, headers)
        except BusError as exc:
            log.info("cancel not confirmed", extra={"worker_id": cancel.worker_id, "error": str(exc)})
            return False
        return True

    async def health(self, check: HealthCheck) -> HealthAnswer:
        """Run the health script on the agent; raises WorkerUnavailable when it does not
        answer within the check's timeout (plus a margin for the round trip)."""
        body, headers = self._signed(check)
        try:
            reply = await self.bus.request(
                subjects.agent_health(check.worker_id), body, check.timeout_s + 5.0, headers
            )
        except BusError as exc:
            raise WorkerUnavailable(f"the agent did not answer the health check ({exc})") from None
        try:
            return decode_health_answer(reply.data)
        except ProtocolError as exc:
            raise WorkerUnavailable(f"the agent's health answer was not understood: {exc}") from None
