"""Credentials on the in-memory store: the bootstrap happens once, tokens are stored as hashes
and revoked at once, joining checks its token and refuses a live node's name, renewal keeps
the name, node removal revokes, registry passwords are stored sealed (as given only on a
development cluster) and one sealed under another CA is a clear 409 to the agent."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import HTTPException

from theseus.security import pki
from theseus.security.tokens import Scope, new_join_token, parse_api_token, secret_hash
from theseus.server import access_writes
from theseus.server.access_writes import AccessDenied, AccessWriter, serial_hex
from theseus.server.routes.registry_logins import agent_login
from theseus.store import keys
from theseus.store.base import Put
from theseus.store.cache import StateCache
from theseus.store.memory import MemoryStore


@pytest.fixture
def ca() -> pki.Issued:
    return pki.create_ca("unit")


@pytest.fixture
def writer(store: MemoryStore, cache: StateCache, ca: pki.Issued) -> AccessWriter:
    return AccessWriter(store, cache, ca, agent_cert_days=1)


def _csr(name: str) -> bytes:
    return pki.make_csr(pki.new_key(), name, pki.Role.AGENT)


async def test_bootstrap_happens_once_and_stores_only_a_hash(
    writer: AccessWriter, store: MemoryStore
) -> None:
    secret, record = await writer.bootstrap()
    token = parse_api_token(secret)
    stored = await store.get(keys.token_key(token.id))
    assert stored is not None and token.secret.encode() not in stored.value
    assert record.secret_hash == secret_hash(token.secret) and record.scopes == [Scope.ADMIN]
    with pytest.raises(AccessDenied) as again:
        await writer.bootstrap()
    assert again.value.status == 409


async def test_a_revoked_token_is_gone_from_the_cache_at_once(
    writer: AccessWriter, cache: StateCache
) -> None:
    _, record = await writer.create_token("ci", [Scope.WRITE], ttl=None, created_by="t")
    assert record.id in cache.access.tokens
    await writer.revoke_token(record.id)
    assert record.id not in cache.access.tokens
    with pytest.raises(AccessDenied, match="no token"):
        await writer.revoke_token(record.id)


async def test_join_checks_its_token_and_issues_an_agent_certificate(
    writer: AccessWriter, cache: StateCache, ca: pki.Issued
) -> None:
    join, _ = await writer.create_join_token(3600, created_by="t")
    name, cert = await writer.join(join, _csr("node-a"), "198.18.0.5")
    holder = pki.identity(cert)
    assert (name, holder.name, holder.role) == ("node-a", "node-a", "agent")
    assert cache.access.certificates["node-a"].serial == serial_hex(cert)

    wrong_ca = str(new_join_token(pki.ca_fingerprint(pki.create_ca("other").cert)))
    unknown = str(new_join_token(pki.ca_fingerprint(ca.cert)))
    for token, reason in [(wrong_ca, "another cluster"), (unknown, "unknown or revoked")]:
        with pytest.raises(AccessDenied, match=reason) as refused:
            await writer.join(token, _csr("node-b"), "198.18.0.6")
        assert refused.value.status == 401
    with pytest.raises(AccessDenied, match="not a valid node name"):
        await writer.join(join, _csr("../etc"), "198.18.0.6")


async def test_an_expired_join_token_is_refused(
    writer: AccessWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    join, record = await writer.create_join_token(60, created_by="t")
    later = SimpleNamespace(time=lambda: record.expires_at + 1)  # the writer's clock, a minute on
    monkeypatch.setattr(access_writes, "time", later)
    with pytest.raises(AccessDenied, match="expired"):
        await writer.join(join, _csr("node-c"), "198.18.0.7")


async def test_a_live_nodes_name_is_refused_and_removal_revokes(
    writer: AccessWriter, store: MemoryStore, cache: StateCache
) -> None:
    join, _ = await writer.create_join_token(3600, created_by="t")
    _, cert = await writer.join(join, _csr("node-d"), "198.18.0.8")
    lease = await store.grant_lease(10)
    revision = await store.commit([Put(keys.alive_key("node-d"), b"{}", lease)])
    assert revision is not None
    await cache.wait_for_revision(revision)
    with pytest.raises(AccessDenied, match="is alive") as refused:
        await writer.join(join, _csr("node-d"), "198.18.0.9")
    assert refused.value.status == 409

    renewed = await writer.renew("node-d", _csr("node-d"), "198.18.0.8")
    assert pki.identity(renewed).serial != pki.identity(cert).serial
    with pytest.raises(AccessDenied, match="must name node"):
        await writer.renew("node-d", _csr("node-e"), "198.18.0.8")

    assert await writer.remove_node("node-d")
    assert serial_hex(renewed) in cache.access.revoked
    assert "node-d" not in cache.access.certificates and "node-d" not in cache.state.alive
    assert not await writer.remove_node("node-d")


async def test_a_server_without_the_ca_key_admits_nobody(
    store: MemoryStore, cache: StateCache
) -> None:
    writer = AccessWriter(store, cache, None, agent_cert_days=1)
    with pytest.raises(AccessDenied, match="no CA key") as refused:
        await writer.join("THS1-a-b.c", _csr("node-f"), "198.18.0.10")
    assert refused.value.status == 409


async def test_a_registry_login_is_stored_replaced_and_removed(
    writer: AccessWriter, cache: StateCache
) -> None:
    await writer.set_registry_login("r.example:5000", "u", "pw-1", created_by="admin")
    await writer.set_registry_login("r.example:5000", "u", "pw-2", created_by="admin")
    login = cache.access.registry_logins["r.example:5000"]
    assert (login.username, login.open_password(writer.login_key)) == ("u", "pw-2")
    assert "pw-2" not in repr(login)
    await writer.remove_registry_login("r.example:5000")
    assert "r.example:5000" not in cache.access.registry_logins
    with pytest.raises(AccessDenied, match="no login is stored for registry") as missing:
        await writer.remove_registry_login("r.example:5000")
    assert missing.value.status == 404


def _ctx(cache: StateCache, access: AccessWriter) -> Any:
    """What the agent's login route reads of the server's context."""
    return SimpleNamespace(cache=cache, access=access)


async def test_a_registry_password_is_sealed_in_the_store_and_opened_only_for_agents(
    writer: AccessWriter, store: MemoryStore, cache: StateCache
) -> None:
    host = "r.example:5000"
    await writer.set_registry_login(host, "u", "pw-sealed", created_by="admin")
    stored = store.value(keys.registry_login_key(host))
    assert stored is not None and b"pw-sealed" not in stored
    assert json.loads(stored)["sealed"].startswith("v1:") and b"password" not in stored
    answer = await agent_login("n1", host, _ctx(cache, writer))
    assert (answer.username, answer.password) == ("u", "pw-sealed")


async def test_a_password_sealed_under_another_ca_is_a_clear_409_never_a_500(
    writer: AccessWriter, store: MemoryStore, cache: StateCache
) -> None:
    host = "r.example:5000"
    await writer.set_registry_login(host, "u", "pw", created_by="admin")
    replaced = AccessWriter(store, cache, pki.create_ca("unit"), agent_cert_days=1)
    with pytest.raises(HTTPException) as refused:
        await agent_login("n1", host, _ctx(cache, replaced))
    assert refused.value.status_code == 409
    assert refused.value.detail == (
        "the login for registry r.example:5000 cannot be read by this server (sealed with "
        "another cluster CA): run theseus registry-login r.example:5000 again"
    )
    keyless = AccessWriter(store, cache, None, agent_cert_days=1)
    with pytest.raises(HTTPException) as no_key:
        await agent_login("n1", host, _ctx(cache, keyless))
    assert no_key.value.status_code == 409 and "no CA key" in no_key.value.detail
    # Stored again through the new CA's server, it opens.
    await replaced.set_registry_login(host, "u", "pw", created_by="admin")
    answer = await agent_login("n1", host, _ctx(cache, replaced))
    assert answer.password == "pw"


async def test_a_development_cluster_stores_the_password_as_given_a_keyless_secure_one_refuses(
    store: MemoryStore, cache: StateCache
) -> None:
    host = "r.example:5000"
    keyless = AccessWriter(store, cache, None, agent_cert_days=1)
    with pytest.raises(AccessDenied, match="cannot seal") as refused:
        await keyless.set_registry_login(host, "u", "pw", created_by="admin")
    assert refused.value.status == 409 and store.value(keys.registry_login_key(host)) is None
    development = AccessWriter(store, cache, None, agent_cert_days=1, plain_logins=True)
    await development.set_registry_login(host, "u", "pw-plain", created_by="anonymous")
    assert json.loads(store.value(keys.registry_login_key(host)) or b"")["password"] == "pw-plain"
    answer = await agent_login("n1", host, _ctx(cache, development))
    assert answer.password == "pw-plain"
