"""parse_pem: what an import-certificate step keeps from a PEM, and what it refuses."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from domain.certificates import MAX_PEM_BYTES, parse_pem
from domain.errors import Rejected

NOT_BEFORE = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
NOT_AFTER = NOT_BEFORE + timedelta(days=90)


def make_cert(
    common_name: str, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``common_name``, self-signed unless an (issuer name, key) is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, signer = issuer if issuer is not None else (common_name, key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .sign(signer, hashes.SHA256())
    )
    return cert, key


def pem_of(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: ec.EllipticCurvePrivateKey, fmt: str = "pkcs8") -> str:
    formats = {
        "pkcs8": (serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "traditional": (serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()),
        "encrypted": (serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")),
    }
    private_format, encryption = formats[fmt]
    return key.private_bytes(serialization.Encoding.PEM, private_format, encryption).decode()


def self_signed_with_key() -> str:
    """A PEM as people export it: the certificate followed by its private key."""
    cert, key = make_cert("web.example.com")
    return pem_of(cert) + key_pem(key)


@pytest.fixture(scope="module")
def leaf_and_ca() -> tuple[x509.Certificate, x509.Certificate]:
    _, root_key = make_cert("Example Root CA")
    ca, ca_key = make_cert("Example Issuing CA", ("Example Root CA", root_key))
    leaf, _ = make_cert("api.example.com", ("Example Issuing CA", ca_key))
    return leaf, ca


def test_a_self_signed_certificate_is_parsed() -> None:
    cert, _ = make_cert("web.example.com")

    parsed = parse_pem(pem_of(cert))

    assert parsed.subject == "CN=web.example.com"
    assert parsed.issuer == "CN=web.example.com"
    assert (parsed.not_before, parsed.not_after) == (NOT_BEFORE, NOT_AFTER)
    assert parsed.had_private_key is False


def test_the_thumbprint_is_the_sha256_of_the_der() -> None:
    cert, _ = make_cert("web.example.com")
    der = cert.public_bytes(serialization.Encoding.DER)

    assert parse_pem(pem_of(cert)).thumbprint == hashlib.sha256(der).hexdigest()


def test_the_first_certificate_of_a_chain_is_the_leaf(leaf_and_ca) -> None:
    leaf, ca = leaf_and_ca

    parsed = parse_pem(pem_of(leaf) + pem_of(ca))

    assert (parsed.subject, parsed.issuer) == ("CN=api.example.com", "CN=Example Issuing CA")
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    assert parsed.thumbprint == hashlib.sha256(leaf_der).hexdigest()


def test_the_whole_chain_is_kept(leaf_and_ca) -> None:
    leaf, ca = leaf_and_ca

    parsed = parse_pem(pem_of(leaf) + pem_of(ca))

    assert x509.load_pem_x509_certificates(parsed.certificates_pem.encode()) == [leaf, ca]


@pytest.mark.parametrize("fmt", ["pkcs8", "traditional", "encrypted"])
@pytest.mark.parametrize("key_first", [False, True], ids=["key-after", "key-before"])
def test_a_private_key_is_noticed_and_dropped(fmt: str, key_first: bool) -> None:
    cert, key = make_cert("web.example.com")
    parts = [pem_of(cert), key_pem(key, fmt)]

    parsed = parse_pem("".join(reversed(parts) if key_first else parts))

    assert parsed.had_private_key is True
    assert "PRIVATE KEY" not in parsed.certificates_pem
    assert x509.load_pem_x509_certificates(parsed.certificates_pem.encode()) == [cert]


def test_text_around_the_blocks_is_ignored() -> None:
    cert, _ = make_cert("web.example.com")

    parsed = parse_pem("Bag Attributes\n  friendlyName: web\n" + pem_of(cert) + "\n\n")

    assert parsed.certificates_pem == pem_of(cert)


def test_a_pem_of_exactly_the_limit_is_accepted() -> None:
    cert, _ = make_cert("web.example.com")
    pem = pem_of(cert)

    padded = pem + "\n" * (MAX_PEM_BYTES - len(pem))

    assert parse_pem(padded).subject == "CN=web.example.com"


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        ("", "no certificate"),
        ("hello, I am not a certificate", "no certificate"),
        ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
         "not a valid certificate"),
        ("-----BEGIN CERTIFICATE-----\n", "not a valid certificate"),
    ],
    ids=["empty", "garbage", "garbage-in-a-block", "unterminated-block"],
)
def test_a_pem_without_a_certificate_is_rejected(pem: str, message: str) -> None:
    with pytest.raises(Rejected, match=message):
        parse_pem(pem)


def test_a_pem_with_only_a_private_key_is_rejected() -> None:
    _, key = make_cert("web.example.com")

    with pytest.raises(Rejected, match="holds no certificate"):
        parse_pem(key_pem(key))


def test_an_over_size_pem_is_rejected() -> None:
    cert, _ = make_cert("web.example.com")
    pem = pem_of(cert)

    with pytest.raises(Rejected, match=f"larger than {MAX_PEM_BYTES} bytes"):
        parse_pem(pem + "\n" * (MAX_PEM_BYTES - len(pem) + 1))
