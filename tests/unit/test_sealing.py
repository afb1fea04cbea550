"""Sealing (``theseus.security.sealing``): a registry password encrypted under a key derived
from the cluster CA's, bound to its registry host; a wrong key, another host, a tampered or
garbled value never open; and ``RegistryLogin`` reads both a sealed record and a plain one
written before sealing."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from theseus.security import pki
from theseus.security.records import RegistryLogin
from theseus.security.sealing import KEY_BYTES, SealError, key_from_ca_key, open_sealed, seal

HOST = "r.example:5000"


@pytest.fixture(scope="module")
def key() -> bytes:
    return key_from_ca_key(pki.create_ca("unit").key)


def test_the_key_is_derived_from_the_ca_key_alone_whatever_its_file_looks_like() -> None:
    ca = pki.create_ca("unit")
    key = key_from_ca_key(ca.key)
    assert len(key) == KEY_BYTES and key == key_from_ca_key(ca.key)
    # The same key in another PEM form (OpenSSL's traditional "EC PRIVATE KEY").
    traditional = pki.load_key(ca.key).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert traditional != ca.key and key_from_ca_key(traditional) == key
    assert key_from_ca_key(pki.create_ca("unit").key) != key  # another CA: another key


def test_a_sealed_secret_opens_with_its_key_and_host_and_shows_nothing(key: bytes) -> None:
    sealed = seal(key, "s3cret-pässword", HOST)
    assert sealed.startswith("v1:")
    raw = base64.b64decode(sealed.removeprefix("v1:"))
    assert b"s3cret" not in raw and "s3cret" not in sealed
    assert len(raw) == 12 + len("s3cret-pässword".encode()) + 16  # nonce, ciphertext, tag
    assert seal(key, "s3cret-pässword", HOST) != sealed  # a fresh nonce every time
    assert open_sealed(key, sealed, HOST) == "s3cret-pässword"


def test_a_wrong_key_another_host_or_a_tampered_value_does_not_open(key: bytes) -> None:
    sealed = seal(key, "pw", HOST)
    other = key_from_ca_key(pki.create_ca("unit").key)
    with pytest.raises(SealError, match="another key"):
        open_sealed(other, sealed, HOST)
    with pytest.raises(SealError):  # a record moved under another registry's key
        open_sealed(key, sealed, "other.example:5000")
    raw = bytearray(base64.b64decode(sealed.removeprefix("v1:")))
    for index in (0, 12, len(raw) - 1):  # the nonce, the ciphertext, the tag
        tampered = bytearray(raw)
        tampered[index] ^= 0x01
        with pytest.raises(SealError):
            open_sealed(key, "v1:" + base64.b64encode(bytes(tampered)).decode(), HOST)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("v2:AAAA", "unknown sealed format 'v2'"),
        ("pw", "unknown sealed format"),
        ("v1:not base64!", "not base64"),
        ("v1:" + base64.b64encode(b"short").decode(), "too short"),
    ],
)
def test_a_garbled_value_is_a_seal_error_naming_what_is_wrong(
    key: bytes, value: str, reason: str
) -> None:
    with pytest.raises(SealError, match=reason):
        open_sealed(key, value, HOST)


def test_a_login_record_opens_sealed_and_reads_a_plain_one_written_before_sealing(
    key: bytes,
) -> None:
    sealed = RegistryLogin(
        host=HOST, username="u", sealed=seal(key, "pw-new", HOST), created_at=1.0
    )
    assert sealed.open_password(key) == "pw-new"
    assert "sealed" not in repr(sealed) and "pw" not in repr(sealed)
    with pytest.raises(SealError, match="no CA key"):
        sealed.open_password(None)
    # A record as stored before sealing: JSON with the password as given.
    old = RegistryLogin.model_validate_json(
        f'{{"host": "{HOST}", "username": "u", "password": "pw-old", "created_at": 1.0,'
        ' "created_by": "admin"}'
    )
    assert old.open_password(key) == "pw-old" and old.open_password(None) == "pw-old"
    with pytest.raises(ValidationError, match="either password or sealed"):
        RegistryLogin(host=HOST, username="u", created_at=1.0)
    with pytest.raises(ValidationError, match="either password or sealed"):
        RegistryLogin(host=HOST, username="u", password="a", sealed="v1:b", created_at=1.0)
