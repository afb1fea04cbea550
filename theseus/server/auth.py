"""Authentication and authorization of every request, before it is routed or its body read.

``AuthMiddleware`` (an ASGI middleware installed by ``theseus.server.app``) finds out who is
calling (``identify``), asks ``theseus.server.policy`` what the route needs, refuses with 401
(who are you?) or 403 (you may not; the message names the scope needed), and otherwise hands
the request on with the caller in ``request.state.caller``. After a write it hands the answer's
status to the audit log. Checking a body-less refusal first also means that an anonymous 20 MB
body is refused without being read.

Callers, in the order they are recognised:

* a verified client certificate (``theseus.security.serving``) of an agent or a server, unless
  its serial has been revoked;
* an API token (``Authorization: Bearer ths-…`` or ``X-Theseus-Token``), checked against the
  hashes the cache holds (``theseus.store.access``): a dict lookup, no etcd round trip;
* nobody: allowed only on a development cluster (``anonymous=True``: plain HTTP on loopback),
  where the anonymous caller may do everything, as before security existed.

A token is never logged or repeated in an answer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from theseus.security.pki import Role
from theseus.security.serving import peer_identity
from theseus.security.tokens import Scope, TokenError, allows, parse_api_token, secret_matches
from theseus.server.asgi_errors import send_error
from theseus.server.policy import Decision, Need, decide
from theseus.store.access import AccessState

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Caller(NamedTuple):
    kind: str  # "token", "agent", "server" or "anonymous"
    name: str  # the token's name, the node's or the server's
    token_id: str | None = None
    scopes: tuple[Scope, ...] = ()


ANONYMOUS = Caller("anonymous", "anonymous", None, (Scope.ADMIN,))
NOBODY = Caller("nobody", "nobody")  # an unauthenticated caller of a public route


class Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def presented_token(scope: Mapping[str, Any]) -> str | None:
    authorization = _header(scope, b"authorization")
    if authorization is not None:
        kind, _, credentials = authorization.partition(" ")
        if kind.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        raise Refusal(401, "the Authorization header must be 'Bearer <token>'")
    return _header(scope, b"x-theseus-token")


def identify(scope: Mapping[str, Any], access: AccessState, anonymous: bool, now: float) -> Caller:
    """Who is calling, or ``Refusal(401)``."""
    peer = peer_identity(scope)
    if peer is not None and peer.role in (Role.AGENT, Role.SERVER):
        if format(peer.serial, "x") in access.revoked:
            raise Refusal(401, f"the certificate of {peer.name} has been revoked")
        return Caller(peer.role, peer.name)
    text = presented_token(scope)
    if text is None:
        if anonymous:
            return ANONYMOUS
        raise Refusal(
            401, "this server requires an API token: send 'Authorization: Bearer <token>'"
        )
    try:
        token = parse_api_token(text)
    except TokenError as exc:
        raise Refusal(401, str(exc)) from None
    record = access.tokens.get(token.id)
    if record is None or not secret_matches(token.secret, record.secret_hash):
        raise Refusal(401, "unknown or revoked token")
    if record.expired(now):
        raise Refusal(401, f"token {record.name!r} ({record.id}) has expired")
    return Caller("token", record.name, record.id, tuple(record.scopes))


def authorize(caller: Caller, decision: Decision) -> None:
    """``Refusal(403)`` unless ``caller`` may do what ``decision`` needs."""
    rule = decision.rule
    if rule.need is Need.PUBLIC or caller is ANONYMOUS:
        return
    if rule.need is Need.NODE:
        if caller.kind == Role.AGENT and decision.node in (None, caller.name):
            return
        node = f"node {decision.node!r}" if decision.node else "the node"
        raise Refusal(403, f"only the agent of {node} may call this, with its certificate")
    needed = rule.need.scope
    assert needed is not None
    if caller.kind in (Role.AGENT, Role.SERVER):
        if rule.agents:
            return
        raise Refusal(403, f"a {caller.kind}'s certificate does not grant the {needed} scope")
    if not allows(list(caller.scopes), needed):
        held = ", ".join(caller.scopes) or "none"
        raise Refusal(
            403, f"this needs a token with the {needed} scope; token {caller.name!r} has {held}"
        )


AuditHook = Callable[[Caller, str, str, int], None]


class AuthMiddleware:
    """See the module's docstring. ``access`` gives the cache's credentials (None until the
    server is ready); ``audit`` is told of every write's outcome."""

    def __init__(
        self,
        app: ASGIApp,
        access: Callable[[], AccessState | None],
        anonymous: bool,
        audit: Callable[[], AuditHook | None],
    ) -> None:
        self.app = app
        self._access = access
        self._anonymous = anonymous
        self._audit = audit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        try:
            caller, decision = admit(scope, self._access(), self._anonymous)
        except Refusal as refusal:
            await refuse(send, refusal)
            return
        audited = (method not in ("GET", "HEAD") or path == "/cleanup") and not _dry_run(scope)
        if not audited or decision.rule.need is Need.NODE:
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            hook = self._audit()
            if hook is not None:
                # A route may have named the caller itself (the dashboard's session).
                named = scope.get("state", {}).get("caller", caller)
                hook(named if isinstance(named, Caller) else caller, method, path, status)


def admit(
    scope: MutableMapping[str, Any], access: AccessState | None, anonymous: bool
) -> tuple[Caller, Decision]:
    """Who calls and what the route needs, the caller left in the scope's state for the route
    (``request.state.caller``); ``Refusal`` (401, 403, or 503 while the server is starting)
    otherwise. ``access``: the cache's credentials, None until the server is ready. Called by
    ``AuthMiddleware`` and by ``theseus.server.hot_door``, for the agents' hot routes."""
    decision = decide(scope["method"], scope["path"])
    public = decision.rule.need is Need.PUBLIC
    if access is None:
        if not public:
            raise Refusal(503, "the server is starting")
        caller = ANONYMOUS if anonymous else NOBODY
    else:
        try:
            caller = identify(scope, access, anonymous, time.time())
        except Refusal:
            if not public:
                raise
            caller = NOBODY  # a public route serves whoever asks
        authorize(caller, decision)
    scope.setdefault("state", {})["caller"] = caller
    return caller, decision


def _dry_run(scope: dict[str, Any]) -> bool:
    """``POST /deploy?dry_run=true`` (a plan) writes nothing, so it is no write to audit."""
    values = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1")).get("dry_run", [])
    return any(v.lower() in ("1", "true", "yes", "on") for v in values)


async def refuse(send: Any, refusal: Refusal) -> None:
    """Answer ``refusal`` in the API's error shape (a 401 with its challenge)."""
    challenge = [(b"www-authenticate", b'Bearer realm="theseus"')] if refusal.status == 401 else []
    await send_error(send, refusal.status, str(refusal), headers=challenge)
