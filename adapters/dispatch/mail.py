"""Sending the mail of email steps (SMTP, in a thread: smtplib blocks)."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

from domain.configuration import Smtp
from domain.process import Email


def _send(smtp: Smtp, email: Email) -> None:
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = ", ".join(email.to)
    message["Subject"] = email.subject
    message.set_content(email.body)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=30) as client:
        if smtp.starttls:
            client.starttls()
        if smtp.username:
            client.login(smtp.username, smtp.password or "")
        client.send_message(message)


async def send_email(smtp: Smtp, email: Email) -> None:
    """Send one message; raises OSError/smtplib.SMTPException on failure."""
    await asyncio.to_thread(_send, smtp, email)
