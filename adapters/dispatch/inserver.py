"""Steps that run inside the server and never touch a worker or run user code: a
manual intervention waits for a person, an email goes out through the configured SMTP
server, a certificate is checked and stored."""

from __future__ import annotations

import asyncio
import smtplib
from typing import TYPE_CHECKING

from adapters.dispatch.mail import send_email
from domain.certificates import parse_pem
from domain.errors import Rejected
from domain.plan import StepState
from domain.process import Step

if TYPE_CHECKING:
    from adapters.dispatch.taskrun import TaskRun


async def run_intervention(run: TaskRun, step: Step) -> StepState:
    """Wait for someone to approve or reject the step (or for the task's cancel)."""
    actor = run.ctx.actor
    task = await run._load()
    if task.runs[step.name].state is not StepState.AWAITING_INTERVENTION:
        await run._update(
            lambda t: t.request_intervention(step.name, step.instructions or "", actor)
        )
    while True:
        task = await run._load()
        if task.runs[step.name].state.is_final:
            return task.runs[step.name].state
        run.changed.clear()
        waiter = asyncio.create_task(run.changed.wait())
        cancel = asyncio.create_task(run.cancel.wait())
        try:
            await asyncio.wait({waiter, cancel}, timeout=2.0,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (waiter, cancel):
                t.cancel()
        if run.cancel.is_set():
            return await run._finish_step(step.name, StepState.CANCELLED, reason="cancelled")

async def send_email_step(run: TaskRun, step: Step) -> StepState:
    """Send the step's message through the configured SMTP server."""
    config = await asyncio.to_thread(run.ctx.app.configuration)
    if step.email is None:
        return await run._finish_step(step.name, StepState.FAILED, reason="the step has no message")
    if config.smtp is None:
        return await run._finish_step(
            step.name, StepState.FAILED,
            reason="no SMTP server is configured: PUT /api/configuration/smtp first",
        )
    try:
        await send_email(config.smtp, step.email)
    except (OSError, smtplib.SMTPException) as exc:
        return await run._finish_step(
            step.name, StepState.FAILED,
            reason=f"could not send mail via {config.smtp.host}:{config.smtp.port}: {exc}",
        )
    return await run._finish_step(
        step.name, StepState.SUCCESS, reason=f"sent to {', '.join(step.email.to)}"
    )

async def import_certificate(run: TaskRun, step: Step) -> StepState:
    """Check the step's PEM and store its public certificates."""
    if step.certificate is None:
        return await run._finish_step(step.name, StepState.FAILED, reason="the step has no PEM")
    try:
        parsed = parse_pem(step.certificate.pem)
    except Rejected as exc:
        return await run._finish_step(step.name, StepState.FAILED, reason=str(exc))
    name = step.certificate.name or parsed.subject
    await asyncio.to_thread(
        run.ctx.app.store_certificate, name, parsed, actor=run.ctx.actor
    )
    dropped = parsed.had_private_key or step.certificate.dropped_private_key
    note = " (its private key was not stored)" if dropped else ""
    return await run._finish_step(
        step.name, StepState.SUCCESS,
        reason=f"imported {parsed.subject}, SHA-256 {parsed.thumbprint}{note}",
    )
