"""Sealing a secret the cluster must store but etcd must not read: a registry login's password.

A secret is encrypted with AES-256-GCM under a key that etcd never holds: it is derived from
the cluster CA's private key, which every server has in its ``--pki-dir`` and etcd never sees.
What etcd keeps (in its WAL, snapshots and backups) is ``v1:<base64 of nonce + ciphertext>``,
bound by the associated data to what it belongs to (the registry host), so a record copied
under another key does not open.

Pure: key derivation, ``seal`` and ``open_sealed``. Called by the server's access writes
(``theseus.server.access_writes``: sealing at ``theseus registry-login``) and by the route that
answers an agent's request for a login (``theseus.server.routes.registry_logins``: opening).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from theseus.security import pki

VERSION = "v1"
INFO = b"theseus registry logins v1"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, random per record: GCM's safe size for random nonces


class SealError(ValueError):
    """A sealed value that cannot be opened: another key, tampered, or not a sealed value.
    The message never contains the value or the key."""


def key_from_ca_key(ca_key_pem: bytes) -> bytes:
    """The sealing key of the cluster whose CA key is ``ca_key_pem``: HKDF-SHA256 over the
    key's DER bytes.

    The DER is re-encoded from the loaded key (PKCS#8, unencrypted) rather than taken from the
    file, so that the same key gives the same sealing key however its file was written (PEM
    line lengths, a traditional "EC PRIVATE KEY" file)."""
    key = pki.load_key(ca_key_pem)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=INFO).derive(der)


def seal(key: bytes, secret: str, bound_to: str) -> str:
    """``secret`` encrypted under ``key``, opened only with the same ``bound_to``."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, secret.encode(), bound_to.encode())
    return f"{VERSION}:{base64.b64encode(nonce + sealed).decode()}"


def open_sealed(key: bytes, sealed: str, bound_to: str) -> str:
    """The secret ``seal`` made; ``SealError`` when ``key`` or ``bound_to`` is not the one it
    was sealed with, or the value was altered."""
    version, _, body = sealed.partition(":")
    if version != VERSION:
        raise SealError(f"unknown sealed format {version!r} (this server reads {VERSION})")
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise SealError("the sealed value is not base64") from None
    if len(raw) < NONCE_BYTES + 16:  # a nonce and GCM's 16-byte tag at least
        raise SealError("the sealed value is too short")
    try:
        secret = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound_to.encode())
    except InvalidTag:
        raise SealError("sealed with another key, for another record, or altered") from None
    return secret.decode()
