"""The route policy table: every route has its entry, and the decisions of the auth
middleware (who is who, who may do what) on crafted requests."""

from __future__ import annotations

import datetime

import pytest

from theseus.security.pki import Identity
from theseus.security.records import RevokedCertificate, TokenRecord
from theseus.security.tokens import Scope, new_api_token, secret_hash
from theseus.server.app import create_app
from theseus.server.auth import ANONYMOUS, Caller, Refusal, _dry_run, authorize, identify
from theseus.server.config import ServerConfig
from theseus.server.policy import FALLBACK, TEMPLATES, Need, decide
from theseus.store.access import AccessState


def _route_templates() -> set[tuple[str, str]]:
    app = create_app(ServerConfig())
    paths = app.openapi()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


def _normalise(path: str) -> str:
    """``/v1/tasks/{task_id}`` and ``/v1/tasks/{id}`` name the same route."""
    import re

    return re.sub(r"\{[^}]+\}", "{}", path)


def test_every_route_of_the_api_has_an_explicit_rule() -> None:
    table = {(m, _normalise(p)) for m, p in TEMPLATES}
    missing = {(m, p) for m, p in _route_templates() if (m, _normalise(p)) not in table}
    assert not missing, f"routes without a policy entry: {sorted(missing)}"


def test_unknown_paths_need_admin_and_agents_routes_name_their_node() -> None:
    assert decide("GET", "/v1/secret-new-thing").rule == FALLBACK
    decision = decide("POST", "/v1/agent/node-7/heartbeat")
    assert decision.rule.need is Need.NODE and decision.node == "node-7"
    assert decide("HEAD", "/v1/tasks").rule.need is Need.READ
    assert decide("GET", "/v1/registry/watch").rule.agents


def _scope(
    headers: dict[str, str] | None = None, peer: Identity | None = None
) -> dict[str, object]:
    scope: dict[str, object] = {
        "type": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    if peer is not None:
        scope["extensions"] = {"tls": {"peer": peer}}
    return scope


def _access_with(scopes: list[Scope], expires_at: float | None = None) -> tuple[AccessState, str]:
    token = new_api_token()
    access = AccessState()
    access.tokens[token.id] = TokenRecord(
        id=token.id,
        name="t",
        scopes=scopes,
        secret_hash=secret_hash(token.secret),
        created_at=0,
        expires_at=expires_at,
    )
    return access, str(token)


def test_identify_tokens_certificates_and_anonymity() -> None:
    access, token = _access_with([Scope.WRITE])
    caller = identify(_scope({"Authorization": f"Bearer {token}"}), access, False, 1.0)
    assert caller.kind == "token" and caller.scopes == (Scope.WRITE,)
    assert identify(_scope({"X-Theseus-Token": token}), access, False, 1.0) == caller
    assert identify(_scope(), access, True, 1.0) is ANONYMOUS
    with pytest.raises(Refusal) as missing:
        identify(_scope(), access, False, 1.0)
    assert missing.value.status == 401
    wrong = token[:-1] + ("a" if token[-1] != "a" else "b")
    with pytest.raises(Refusal, match="unknown or revoked"):
        identify(_scope({"Authorization": f"Bearer {wrong}"}), access, True, 1.0)
    with pytest.raises(Refusal, match="Bearer"):
        identify(_scope({"Authorization": f"Basic {token}"}), access, False, 1.0)

    expiring, old = _access_with([Scope.READ], expires_at=10.0)
    with pytest.raises(Refusal, match="expired"):
        identify(_scope({"Authorization": f"Bearer {old}"}), expiring, False, 11.0)

    now = datetime.datetime.now(datetime.UTC)
    peer = Identity("node-1", "agent", 0xABC, now, now)
    assert identify(_scope(peer=peer), access, False, 1.0) == Caller("agent", "node-1")
    access.revoked["abc"] = RevokedCertificate(
        serial="abc", node="node-1", revoked_at=0, not_after=0
    )
    with pytest.raises(Refusal, match="revoked"):
        identify(_scope(peer=peer), access, False, 1.0)


def test_authorize_scopes_and_node_restriction() -> None:
    reader = Caller("token", "r", "id", (Scope.READ,))
    agent = Caller("agent", "node-1")
    authorize(reader, decide("GET", "/v1/tasks"))
    with pytest.raises(Refusal, match="write scope") as refused:
        authorize(reader, decide("POST", "/deploy"))
    assert refused.value.status == 403
    authorize(Caller("token", "a", "id", (Scope.ADMIN,)), decide("DELETE", "/v1/nodes/x"))
    authorize(agent, decide("POST", "/v1/agent/node-1/reports"))
    authorize(agent, decide("GET", "/v1/registry/web"))
    with pytest.raises(Refusal, match="node-2"):
        authorize(agent, decide("POST", "/v1/agent/node-2/reports"))
    with pytest.raises(Refusal):
        authorize(agent, decide("GET", "/v1/tasks"))
    with pytest.raises(Refusal):
        authorize(reader, decide("POST", "/v1/agent/node-1/heartbeat"))
    authorize(ANONYMOUS, decide("POST", "/v1/acl/tokens"))  # a development cluster


@pytest.mark.parametrize(
    ("query", "dry"),
    [(b"dry_run=true", True), (b"dry_run=1", True), (b"dry_run=false", False), (b"", False)],
)
def test_a_plan_is_not_audited_as_a_write(query: bytes, dry: bool) -> None:
    assert _dry_run({"query_string": query}) is dry


def test_registry_logins_are_set_by_admins_listed_by_readers_read_by_agents_only() -> None:
    reader = Caller("token", "r", "id", (Scope.READ,))
    admin = Caller("token", "a", "id", (Scope.ADMIN,))
    agent = Caller("agent", "node-1")
    host = "registry.example:5000"
    authorize(reader, decide("GET", "/v1/acl/registry-logins"))
    authorize(admin, decide("PUT", f"/v1/acl/registry-logins/{host}"))
    authorize(admin, decide("DELETE", f"/v1/acl/registry-logins/{host}"))
    with pytest.raises(Refusal, match="admin scope"):
        authorize(reader, decide("PUT", f"/v1/acl/registry-logins/{host}"))
    secret = f"/v1/agent/node-1/registry-logins/{host}"
    authorize(agent, decide("GET", secret))
    for token in (reader, admin):  # no token, whatever its scope, reads a password
        with pytest.raises(Refusal, match="only the agent"):
            authorize(token, decide("GET", secret))
    with pytest.raises(Refusal, match="node-2"):
        authorize(agent, decide("GET", f"/v1/agent/node-2/registry-logins/{host}"))
    with pytest.raises(Refusal):
        authorize(agent, decide("PUT", f"/v1/acl/registry-logins/{host}"))
