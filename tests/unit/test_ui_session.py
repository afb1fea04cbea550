"""The dashboard's session cookie and CSRF tokens (``theseus.server.ui.session``): the cookie
names a token without holding it, dies with the token, and cannot be forged or stretched."""

from __future__ import annotations

import pytest

from theseus.security.records import TokenRecord
from theseus.security.tokens import Scope, new_api_token, secret_hash
from theseus.server.ui import session
from theseus.store.access import AccessState

NOW = 1_000_000.0


def _access(expires_at: float | None = None) -> tuple[AccessState, str]:
    token = new_api_token()
    record = TokenRecord(
        id=token.id,
        name="viewer",
        scopes=[Scope.READ],
        secret_hash=secret_hash(token.secret),
        created_at=0.0,
        expires_at=expires_at,
    )
    return AccessState(tokens={token.id: record}), str(token)


def test_a_cookie_names_the_token_without_holding_its_secret() -> None:
    access, token = _access()
    record, cookie = session.sign_in(access, token, NOW)
    assert record.name == "viewer"
    assert token.split("-")[-1] not in cookie and token not in cookie
    assert session.session_of(access, cookie, NOW + 60) == record


def test_a_forged_stretched_or_orphaned_cookie_is_refused() -> None:
    access, token = _access()
    _, cookie = session.sign_in(access, token, NOW)
    token_id, expires, mac = cookie.split(".")
    stretched = f"{token_id}.{int(expires) + 3600}.{mac}"
    forged = f"{token_id}.{expires}.{'0' * len(mac)}"
    for bad in (stretched, forged, "garbage", "", None):
        assert session.session_of(access, bad, NOW) is None
    assert session.session_of(access, cookie, NOW + session.SESSION_SECONDS + 1) is None
    assert session.session_of(AccessState(), cookie, NOW) is None  # the token was revoked


def test_a_session_ends_with_its_token() -> None:
    access, token = _access(expires_at=NOW + 100)
    _, cookie = session.sign_in(access, token, NOW)
    assert session.session_of(access, cookie, NOW + 99) is not None
    assert session.session_of(access, cookie, NOW + 101) is None


@pytest.mark.parametrize("text", ["", "ths-nope", "not a token at all"])
def test_a_bad_token_signs_nobody_in_and_is_not_repeated(text: str) -> None:
    access, _ = _access()
    with pytest.raises(ValueError) as refused:
        session.sign_in(access, text, NOW)
    assert not text or text not in str(refused.value)


def test_csrf_tokens_differ_per_session_and_origin_must_be_this_server() -> None:
    access, token = _access()
    record, one = session.sign_in(access, token, NOW)
    _, two = session.sign_in(access, token, NOW + 1)
    assert session.csrf_token(record, one) != session.csrf_token(record, two)
    assert session.csrf_token(record, one) == session.csrf_token(record, one)
    assert session.same_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert session.same_origin(None, "127.0.0.1:8080")
    assert not session.same_origin("https://evil.example", "127.0.0.1:8080")
    assert not session.same_origin("null", "127.0.0.1:8080")
