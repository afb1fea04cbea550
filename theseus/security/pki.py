"""The cluster's certificate authority: keys, certificates and CSRs, as PEM bytes.

Pure functions over ``cryptography``; nothing here reads or writes files (``theseus.security.
files`` does) or talks to anyone. Called by ``theseus ca`` and the launcher (a new CA, the
servers' and etcd's certificates), by the server's join route (an agent's certificate from its
CSR), and by the agent (its key and CSR; when to renew).

Every certificate names its holder the same way (Swarm's ``ca/certificates.go``): the common
name is the node's or server's name, the organizational unit its role (``server``, ``agent``,
``etcd``, ``client``), and the subject alternative names its addresses, so that a client that
checks the hostname it dialled also checks that it reached the holder of that address. Keys are
ECDSA P-256, as Nomad's and Swarm's are.
"""

from __future__ import annotations

import base64
import datetime
import enum
import hashlib
import ipaddress
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 365
AGENT_DAYS = 90
# Issued certificates start an hour early (a tenth of their life if that is less) so that a
# node whose clock is a little behind the server's can use its certificate at once (Swarm
# backdates by the same hour).
BACKDATE = datetime.timedelta(hours=1)


class Role(enum.StrEnum):
    SERVER = "server"
    AGENT = "agent"
    ETCD = "etcd"
    CLIENT = "client"


class PkiError(ValueError):
    """A certificate, key or CSR that cannot be used; the message says why."""


class Issued(NamedTuple):
    """A certificate and its private key, both PEM."""

    cert: bytes
    key: bytes


class Identity(NamedTuple):
    """Who a certificate was issued to, read back from it."""

    name: str
    role: str
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise PkiError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the key is not an ECDSA key")
    return key


def load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from None


def _name(common_name: str, role: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )


def create_ca(cluster: str, days: int = CA_DAYS) -> Issued:
    """A new self-signed CA for one cluster; it signs certificates and nothing above it."""
    key = new_key()
    now = _now()
    name = _name(f"theseus-ca {cluster}"[:64], "ca")  # X.509 caps a common name at 64
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))


def _alt_names(addresses: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for address in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    return names


def _sign(
    ca: Issued,
    public_key: ec.EllipticCurvePublicKey,
    *,
    name: str,
    role: Role,
    addresses: list[str],
    days: float,
) -> bytes:
    ca_cert = load_cert(ca.cert)
    ca_key = load_key(ca.key)
    now = _now()
    life = datetime.timedelta(days=days)
    # Every holder is both: servers and agents serve TLS (the API, the agent's port) and dial
    # each other; etcd members dial their peers.
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name, role.value))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - min(BACKDATE, life / 10))
        .not_valid_after(min(now + life, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if addresses:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_alt_names(addresses)), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def issue(ca: Issued, *, name: str, role: Role, addresses: list[str], days: float) -> Issued:
    """A certificate and a new key for a holder whose key may be made here (servers, etcd
    members, the launcher's own client)."""
    key = new_key()
    cert = _sign(ca, key.public_key(), name=name, role=role, addresses=addresses, days=days)
    return Issued(cert, key_pem(key))


def make_csr(key: ec.EllipticCurvePrivateKey, name: str, role: Role) -> bytes:
    """A CSR for ``name``: the agent's side of joining (its key never leaves the node)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(name, role.value))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_name(csr_pem: bytes) -> str:
    """The common name a valid CSR asks for; ``PkiError`` if it is malformed or forged."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise PkiError("the certificate request's signature does not verify")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str) or not names[0].value:
        raise PkiError("the certificate request must name exactly one common name")
    return names[0].value


def sign_csr(ca: Issued, csr_pem: bytes, *, role: Role, addresses: list[str], days: float) -> bytes:
    """The certificate for a CSR. The role and addresses are the server's decision, not the
    requester's: only the CSR's public key and common name are taken from it."""
    name = csr_name(csr_pem)
    public_key = x509.load_pem_x509_csr(csr_pem).public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise PkiError("the certificate request's key is not an ECDSA key")
    return _sign(ca, public_key, name=name, role=role, addresses=addresses, days=days)


def identity(cert_pem: bytes) -> Identity:
    cert = load_cert(cert_pem)
    return identity_of(cert)


def identity_of(cert: x509.Certificate) -> Identity:
    def first(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        value = values[0].value if values else ""
        return value if isinstance(value, str) else value.decode()

    return Identity(
        name=first(NameOID.COMMON_NAME),
        role=first(NameOID.ORGANIZATIONAL_UNIT_NAME),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def ca_fingerprint(ca_cert_pem: bytes) -> str:
    """The pin a join token carries: SHA-256 of the CA's public key (its SPKI, RFC 7469, as
    kubeadm's ``--discovery-token-ca-cert-hash``), base32 without padding, lower case, so that
    it survives being pasted into a shell."""
    spki = (
        load_cert(ca_cert_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    digest = hashlib.sha256(spki).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()


def renewal_due(cert_pem: bytes, now: datetime.datetime, fraction: float) -> bool:
    """Whether a certificate has used ``fraction`` of its life (the agent renews at a random
    fraction between one half and four fifths, as Swarm does, so a fleet joined together does
    not renew together)."""
    cert = identity(cert_pem)
    life = cert.not_after - cert.not_before
    return now >= cert.not_before + life * fraction
