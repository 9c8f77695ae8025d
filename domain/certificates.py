"""Certificates imported by import-certificate steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from eventsourcing.domain import event

from domain.actors import Actor
from domain.base import ShoalAggregate
from domain.errors import Rejected

MAX_PEM_BYTES = 256 * 1024


@dataclass(frozen=True)
class ParsedCertificate:
    """What a valid PEM holds; private keys are dropped, never stored."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    thumbprint: str
    certificates_pem: str
    had_private_key: bool


def parse_pem(pem: str) -> ParsedCertificate:
    """Check a PEM holds at least one X.509 certificate; the first is the leaf."""
    if len(pem.encode()) > MAX_PEM_BYTES:
        raise Rejected(f"the PEM is larger than {MAX_PEM_BYTES} bytes")
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise Rejected("the PEM holds no certificate (no BEGIN CERTIFICATE block)")
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise Rejected(f"the PEM is not a valid certificate: {exc}") from None
    leaf = certs[0]
    return ParsedCertificate(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        thumbprint=leaf.fingerprint(hashes.SHA256()).hex(),
        certificates_pem="".join(c.public_bytes(Encoding.PEM).decode() for c in certs),
        had_private_key="PRIVATE KEY-----" in pem,
    )


class StoredCertificate(ShoalAggregate):
    """A certificate chain imported by a step (public parts only)."""

    class Imported(ShoalAggregate.Created):
        name: str
        subject: str
        issuer: str
        not_before: datetime
        not_after: datetime
        thumbprint: str
        certificates_pem: str

    @event(Imported)
    def __init__(
        self,
        name: str,
        subject: str,
        issuer: str,
        not_before: datetime,
        not_after: datetime,
        thumbprint: str,
        certificates_pem: str,
        actor: Actor,
    ) -> None:
        self.name = name
        self.subject = subject
        self.thumbprint = thumbprint
        self.not_after = not_after
        self.is_deleted = False
