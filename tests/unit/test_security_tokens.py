"""Token formats, hashing and scopes."""

from __future__ import annotations

import pytest

from theseus.security import tokens
from theseus.security.tokens import Scope


def test_api_token_round_trips_and_only_its_hash_matches() -> None:
    token = tokens.new_api_token()
    text = str(token)
    assert text.startswith("ths-")
    assert tokens.parse_api_token(text) == token
    stored = tokens.secret_hash(token.secret)
    assert token.secret not in stored
    assert tokens.secret_matches(token.secret, stored)
    assert not tokens.secret_matches(tokens.new_api_token().secret, stored)


def test_join_token_carries_the_ca_pin() -> None:
    token = tokens.new_join_token("abc234")
    parsed = tokens.parse_join_token(str(token))
    assert parsed.ca_pin == "abc234" and parsed == token


@pytest.mark.parametrize("text", ["", "ths-", "ths-abc", "THS1-x-y", "Bearer ths-a.b", "ths-A.b"])
def test_malformed_tokens_are_refused_with_a_fixed_message(text: str) -> None:
    with pytest.raises(tokens.TokenError, match=r"^not a Theseus API token \(expected ths-<id>"):
        tokens.parse_api_token(text)
    with pytest.raises(tokens.TokenError):
        tokens.parse_join_token(text)


def test_each_scope_includes_the_ones_below() -> None:
    assert tokens.allows([Scope.ADMIN], Scope.WRITE)
    assert tokens.allows(["write"], Scope.READ)
    assert not tokens.allows([Scope.READ], Scope.WRITE)
    assert not tokens.allows([Scope.WRITE], Scope.ADMIN)
    assert not tokens.allows([], Scope.READ)
