"""Instructions are signed by the server with an Ed25519 key; an agent pins the server's
public key at registration and refuses anything it cannot verify (the Tentacle
"thumbprint" idea). NATS permissions stop other agents from *sending* to an agent's
subjects; the signature also stops anyone who gets hold of the NATS server itself.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_PREFIX = "ed25519:"
SIGNATURE_HEADER = "Shoal-Signature"


class SigningError(ValueError):
    """A key or signature that cannot be used."""


def new_private_key_pem() -> bytes:
    """A fresh server signing key, PKCS#8 PEM (unencrypted: its file is 0600)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """The signing key from its PEM; SigningError when it is not an Ed25519 key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"the signing key cannot be read: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError("the signing key is not an Ed25519 key")
    return key


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The public half as text an agent stores and compares: ``ed25519:<base64>``."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A pinned key back from ``public_key_text``; SigningError when malformed."""
    if not text.startswith(KEY_PREFIX):
        raise SigningError(f"a server key starts with {KEY_PREFIX!r}")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX):], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise SigningError(f"the server key is malformed: {exc}") from None


def sign(key: Ed25519PrivateKey, payload: bytes) -> str:
    """The signature of ``payload``, base64, for the ``Shoal-Signature`` header."""
    return base64.b64encode(key.sign(payload)).decode()


def verify(key: Ed25519PublicKey, payload: bytes, signature: str | None) -> bool:
    """True only when ``signature`` is the pinned server's signature of ``payload``."""
    if not signature:
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), payload)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
