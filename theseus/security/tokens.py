"""Tokens: their text formats, how they are hashed for storage, and what a scope allows.

Pure; called by the server (checking a request's token, issuing join and API tokens), the
agent (reading the CA pin out of a join token) and the CLI.

Two kinds, each ``<kind>-<public id>.<secret>``, where the public id names the stored record
(so a token can be listed and revoked without its secret being kept anywhere) and only a
SHA-256 of the secret is stored (a leaked etcd snapshot holds no usable token):

* API tokens ``ths-<id>.<secret>``: sent as ``Authorization: Bearer`` (or ``X-Theseus-Token``).
* Join tokens ``THS1-<CA pin>-<id>.<secret>``: the CA pin (``pki.ca_fingerprint``) lets a
  joining agent check, before it sends anything, that the server it reached holds the CA the
  token was made for (Swarm's ``SWMTKN-1-<CA digest>-<secret>``, kubeadm's CA hash).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
from typing import NamedTuple

API_PREFIX = "ths-"
JOIN_PREFIX = "THS1-"
_ID_BYTES = 5  # 8 base32 characters
_SECRET_BYTES = 20  # 32 base32 characters, 160 bits
_WORD = r"[a-z2-7]+"
_API = re.compile(rf"^ths-(?P<id>{_WORD})\.(?P<secret>{_WORD})$")
_JOIN = re.compile(rf"^THS1-(?P<pin>{_WORD})-(?P<id>{_WORD})\.(?P<secret>{_WORD})$")


# A token anywhere in a text: its secret (after the dot) is what ``redact_tokens`` hides.
_ANYWHERE = re.compile(rf"\b((?:ths-|THS1-{_WORD}-){_WORD}\.){_WORD}")


def redact_tokens(text: str) -> str:
    """``text`` with the secret of every API or join token in it replaced by ``<redacted>``
    (the id stays, to say which token it was): what Theseus's logs go through."""
    if "ths-" not in text and "THS1-" not in text:
        return text  # the usual case, without a regular expression's scan
    return _ANYWHERE.sub(r"\1<redacted>", text)


class Scope(enum.StrEnum):
    """What a token may do; each scope includes the ones before it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


_ORDER = [Scope.READ, Scope.WRITE, Scope.ADMIN]


def allows(granted: list[Scope] | list[str], needed: Scope) -> bool:
    """Whether a token holding ``granted`` may do what needs ``needed``."""
    return any(_ORDER.index(Scope(g)) >= _ORDER.index(needed) for g in granted)


class TokenError(ValueError):
    """Text that is not a token of the expected kind (the message never repeats the text)."""


class ApiToken(NamedTuple):
    id: str
    secret: str

    def __str__(self) -> str:
        return f"{API_PREFIX}{self.id}.{self.secret}"


class JoinToken(NamedTuple):
    ca_pin: str
    id: str
    secret: str

    def __str__(self) -> str:
        return f"{JOIN_PREFIX}{self.ca_pin}-{self.id}.{self.secret}"


def _random(size: int) -> str:
    return base64.b32encode(secrets.token_bytes(size)).decode().rstrip("=").lower()


def new_api_token() -> ApiToken:
    return ApiToken(_random(_ID_BYTES), _random(_SECRET_BYTES))


def new_join_token(ca_pin: str) -> JoinToken:
    return JoinToken(ca_pin, _random(_ID_BYTES), _random(_SECRET_BYTES))


def parse_api_token(text: str) -> ApiToken:
    match = _API.match(text.strip())
    if not match:
        raise TokenError("not a Theseus API token (expected ths-<id>.<secret>)")
    return ApiToken(match["id"], match["secret"])


def parse_join_token(text: str) -> JoinToken:
    match = _JOIN.match(text.strip())
    if not match:
        raise TokenError("not a Theseus join token (expected THS1-<CA pin>-<id>.<secret>)")
    return JoinToken(match["pin"], match["id"], match["secret"])


def secret_hash(secret: str) -> str:
    """What is stored of a secret. A plain SHA-256 suffices: the secrets are 160 random bits,
    not passwords, so there is nothing for a slow hash to protect."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison (Swarm compares join secrets the same way)."""
    return hmac.compare_digest(secret_hash(secret), stored_hash)
