"""The dashboard's sign-in session and its protection against cross-site requests: pure.

A session cookie never holds the API token. It holds the token's public id, an expiry and
a MAC over both keyed with the token's stored hash (``TokenRecord.secret_hash``, which only
etcd and the servers' caches hold): every server can check it with what its cache has, no
session store; revoking or expiring the token ends its sessions at once; a stolen cookie is
not the token (the API refuses it) and lives ``SESSION_SECONDS`` at most.

The CSRF token of a session is another MAC of the same fields, sent back by each form and
each script request; with no session (a development cluster's anonymous admin) it is a MAC
under a key of this process. Writes also need an ``Origin`` (when the browser sends one,
and all do on a POST) naming this very server.

Called by ``theseus.server.ui.pages``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import NamedTuple
from urllib.parse import urlsplit

from theseus.security.records import TokenRecord
from theseus.security.tokens import TokenError, parse_api_token, secret_matches
from theseus.store.access import AccessState

COOKIE = "theseus_session"
SESSION_SECONDS = 12 * 3600
_PROCESS_KEY = secrets.token_bytes(32)  # the anonymous mode's CSRF key


class Session(NamedTuple):
    token_id: str
    expires: int


def _mac(key: str | bytes, purpose: str, session: Session) -> str:
    raw = key.encode() if isinstance(key, str) else key
    message = f"theseus-ui|{purpose}|{session.token_id}|{session.expires}".encode()
    return hmac.new(raw, message, hashlib.sha256).hexdigest()


def sign_in(access: AccessState, token_text: str, now: float) -> tuple[TokenRecord, str]:
    """The token's record and the cookie's value, or ``ValueError`` saying why not (never
    repeating the token)."""
    try:
        token = parse_api_token(token_text.strip())
    except TokenError:
        raise ValueError("that is not a Theseus API token (ths-...)") from None
    record = access.tokens.get(token.id)
    if record is None or not secret_matches(token.secret, record.secret_hash):
        raise ValueError("unknown or revoked token")
    if record.expired(now):
        raise ValueError(f"token {record.name!r} has expired")
    expires = int(now) + SESSION_SECONDS
    if record.expires_at is not None:
        expires = min(expires, int(record.expires_at))
    session = Session(record.id, expires)
    return record, f"{record.id}.{expires}.{_mac(record.secret_hash, 'session', session)}"


def session_of(access: AccessState, cookie: str | None, now: float) -> TokenRecord | None:
    """The token a cookie stands for, if it is genuine, unexpired and the token still is."""
    if not cookie:
        return None
    parts = cookie.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    session = Session(parts[0], int(parts[1]))
    record = access.tokens.get(session.token_id)
    if record is None or now >= session.expires or record.expired(now):
        return None
    if not hmac.compare_digest(parts[2], _mac(record.secret_hash, "session", session)):
        return None
    return record


def csrf_token(record: TokenRecord | None, cookie: str | None) -> str:
    """The CSRF token of this session (or of the anonymous mode: ``record`` None)."""
    if record is None or not cookie:
        return _mac(_PROCESS_KEY, "csrf", Session("anonymous", 0))
    token_id, expires, _ = cookie.split(".")
    return _mac(record.secret_hash, "csrf", Session(token_id, int(expires)))


def same_origin(origin: str | None, host: str | None) -> bool:
    """A write's ``Origin`` names this server (absent: not a browser's cross-site request,
    which always carries one on a POST; the CSRF token still has to match)."""
    if origin is None:
        return True
    if origin == "null" or host is None:
        return False
    return urlsplit(origin).netloc == host
