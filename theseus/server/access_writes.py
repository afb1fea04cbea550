"""Every store write about credentials and membership: the one-time bootstrap, API and join
tokens, agents' certificates (issued at join, renewed, revoked), node removal, image
registries' logins.

Called by the credential routes (``theseus.server.routes.access``). Decisions that can be
refused (a bad join token, a name a live node holds) raise ``AccessDenied`` with the status
and message to answer; nothing is written then. Each write waits until the cache has it, so
the next request (the agent's first heartbeat with its new certificate, a token's first use)
finds it.
"""

from __future__ import annotations

import re
import time

from pydantic import BaseModel

from theseus.api.access import NODE_NAME
from theseus.security import pki, sealing
from theseus.security.records import (
    Bootstrap,
    JoinTokenRecord,
    NodeCertificate,
    RegistryLogin,
    RevokedCertificate,
    TokenRecord,
)
from theseus.security.tokens import (
    Scope,
    TokenError,
    new_api_token,
    new_join_token,
    parse_join_token,
    secret_hash,
    secret_matches,
)
from theseus.store import keys
from theseus.store.base import CreateRevisionIs, Delete, Guard, Op, Put, Store
from theseus.store.cache import StateCache


class AccessDenied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(record: BaseModel) -> bytes:
    return record.model_dump_json().encode()


def serial_hex(cert_pem: bytes) -> str:
    return format(pki.identity(cert_pem).serial, "x")


class AccessWriter:
    def __init__(
        self,
        store: Store,
        cache: StateCache,
        ca: pki.Issued | None,
        agent_cert_days: float,
        *,
        plain_logins: bool = False,
    ) -> None:
        self._store = store
        self._cache = cache
        self._ca = ca  # None: this server cannot sign (no CA key): joining is refused
        self._agent_cert_days = agent_cert_days
        # Registry logins' passwords are sealed under a key derived from the CA's, which etcd
        # never holds (``theseus.security.sealing``); without a CA key they are stored as
        # given only where ``plain_logins`` allows it (a development cluster: no CA at all).
        self.login_key = sealing.key_from_ca_key(ca.key) if ca is not None else None
        self._plain_logins = plain_logins

    async def _commit(self, ops: list[Op], guards: list[Guard] | None = None) -> bool:
        revision = await self._store.commit(ops, guards or [], prompt=True)
        if revision is None:
            return False
        await self._cache.wait_for_revision(revision)
        return True

    # --- API tokens -----------------------------------------------------------------------

    async def create_token(
        self, name: str, scopes: list[Scope], ttl: float | None, created_by: str
    ) -> tuple[str, TokenRecord]:
        token = new_api_token()
        now = time.time()
        record = TokenRecord(
            id=token.id,
            name=name,
            scopes=scopes,
            secret_hash=secret_hash(token.secret),
            created_at=now,
            expires_at=now + ttl if ttl is not None else None,
            created_by=created_by,
        )
        key = keys.token_key(token.id)
        await self._commit([Put(key, _json(record))], [CreateRevisionIs(key, 0)])
        return str(token), record

    async def bootstrap(self) -> tuple[str, TokenRecord]:
        """The first admin token, once per cluster: the guard on the bootstrap key makes a
        second call (on this server or another) fail, whatever the timing."""
        token = new_api_token()
        now = time.time()
        record = TokenRecord(
            id=token.id,
            name="bootstrap",
            scopes=[Scope.ADMIN],
            secret_hash=secret_hash(token.secret),
            created_at=now,
            created_by="bootstrap",
        )
        done = Bootstrap(token_id=token.id, at=now)
        ops: list[Op] = [
            Put(keys.BOOTSTRAP, _json(done)),
            Put(keys.token_key(token.id), _json(record)),
        ]
        if not await self._commit(ops, [CreateRevisionIs(keys.BOOTSTRAP, 0)]):
            raise AccessDenied(
                409, "this cluster has been bootstrapped already: ask an admin for a token"
            )
        return str(token), record

    async def revoke_token(self, token_id: str) -> TokenRecord:
        record = self._cache.access.tokens.get(token_id)
        if record is None:
            raise AccessDenied(404, f"no token {token_id!r}")
        await self._commit([Delete(keys.token_key(token_id))])
        return record

    # --- join tokens ----------------------------------------------------------------------

    async def create_join_token(self, ttl: float, created_by: str) -> tuple[str, JoinTokenRecord]:
        if self._ca is None:
            raise AccessDenied(409, "this server has no CA key: agents cannot join through it")
        token = new_join_token(pki.ca_fingerprint(self._ca.cert))
        now = time.time()
        record = JoinTokenRecord(
            id=token.id,
            secret_hash=secret_hash(token.secret),
            created_at=now,
            expires_at=now + ttl,
            created_by=created_by,
        )
        await self._commit([Put(keys.join_token_key(token.id), _json(record))])
        return str(token), record

    async def revoke_join_token(self, token_id: str) -> JoinTokenRecord:
        record = self._cache.access.join_tokens.get(token_id)
        if record is None:
            raise AccessDenied(404, f"no join token {token_id!r}")
        await self._commit([Delete(keys.join_token_key(token_id))])
        return record

    # --- agents' certificates -------------------------------------------------------------

    def _check_join_token(self, text: str) -> None:
        assert self._ca is not None
        try:
            token = parse_join_token(text)
        except TokenError as exc:
            raise AccessDenied(401, str(exc)) from None
        if token.ca_pin != pki.ca_fingerprint(self._ca.cert):
            raise AccessDenied(401, "the join token was made for another cluster's CA")
        record = self._cache.access.join_tokens.get(token.id)
        if record is None or not secret_matches(token.secret, record.secret_hash):
            raise AccessDenied(401, "unknown or revoked join token")
        if record.expired(time.time()):
            raise AccessDenied(401, f"join token {record.id} has expired")

    async def join(self, token: str, csr: bytes, address: str) -> tuple[str, bytes]:
        """An agent's first certificate: (node name, certificate PEM)."""
        if self._ca is None:
            raise AccessDenied(
                409, "this server has no CA key (or runs without TLS): it cannot admit agents"
            )
        self._check_join_token(token)
        name = self._csr_name(csr)
        if name in self._cache.state.alive:
            raise AccessDenied(
                409,
                f"node {name!r} is alive: an agent may not take a live node's name "
                f"(remove it first with `theseus nodes remove {name}`, or choose another)",
            )
        return name, await self._issue(name, csr, address, revoke_previous=True)

    async def renew(self, node: str, csr: bytes, address: str) -> bytes:
        """A fresh certificate for an agent that holds a valid one (the middleware checked it
        and that ``node`` is its own)."""
        if self._ca is None:
            raise AccessDenied(409, "this server has no CA key: it cannot renew certificates")
        if self._csr_name(csr) != node:
            raise AccessDenied(403, f"the certificate request must name node {node!r}")
        return await self._issue(node, csr, address, revoke_previous=False)

    def _csr_name(self, csr: bytes) -> str:
        try:
            name = pki.csr_name(csr)
        except pki.PkiError as exc:
            raise AccessDenied(422, f"csr: {exc}") from None
        if not re.match(NODE_NAME, name):
            raise AccessDenied(422, f"csr: {name!r} is not a valid node name")
        return name

    async def _issue(self, node: str, csr: bytes, address: str, revoke_previous: bool) -> bytes:
        assert self._ca is not None
        try:
            cert = pki.sign_csr(
                self._ca,
                csr,
                role=pki.Role.AGENT,
                addresses=[address],
                days=self._agent_cert_days,
            )
        except (pki.PkiError, ValueError) as exc:
            raise AccessDenied(422, f"csr: {exc}") from None
        who = pki.identity(cert)
        now = time.time()
        record = NodeCertificate(
            node=node, serial=serial_hex(cert), not_after=who.not_after.timestamp(), issued_at=now
        )
        ops: list[Op] = [Put(keys.certificate_key(node), _json(record))]
        previous = self._cache.access.certificates.get(node)
        if revoke_previous and previous is not None:
            # A node joining again under a name whose agent is gone: the old certificate
            # (on a disk that may have been lost or stolen) stops working.
            ops.append(_revocation(previous, now))
        await self._commit(ops)
        return cert

    async def remove_node(self, node: str) -> bool:
        """Forget a node and revoke its certificate; its tasks are replaced elsewhere as a
        lost node's are. False if the cluster knew nothing of it."""
        state = self._cache.state
        cert = self._cache.access.certificates.get(node)
        if node not in state.nodes and cert is None:
            return False
        now = time.time()
        ops: list[Op] = [
            Delete(keys.node_key(node)),
            Delete(keys.alive_key(node)),
            Delete(keys.control_key(node)),
        ]
        if cert is not None:
            ops += [Delete(keys.certificate_key(node)), _revocation(cert, now)]
        await self._commit(ops)
        return True

    # --- image registries' logins ---------------------------------------------------------

    async def set_registry_login(
        self, host: str, username: str, password: str, created_by: str
    ) -> RegistryLogin:
        """Store (or replace) the login the agents use for pulls from ``host``: its password
        sealed, so that etcd's files never hold it (as given on a development cluster)."""
        sealed: str | None = None
        plain: str | None = None
        if self.login_key is not None:
            sealed = sealing.seal(self.login_key, password, host)
        elif self._plain_logins:
            plain = password
        else:
            # A secure server without ca-key.pem: storing the password as given would put it
            # in etcd's files, which is what sealing exists to prevent.
            raise AccessDenied(
                409,
                "this server has no CA key (ca-key.pem in its --pki-dir), so it cannot seal a "
                "registry's password: send the login to a server that has it",
            )
        record = RegistryLogin(
            host=host,
            username=username,
            created_at=time.time(),
            created_by=created_by,
            password=plain,
            sealed=sealed,
        )
        value = record.model_dump_json(exclude_none=True).encode()
        await self._commit([Put(keys.registry_login_key(host), value)])
        return record

    async def remove_registry_login(self, host: str) -> RegistryLogin:
        record = self._cache.access.registry_logins.get(host)
        if record is None:
            raise AccessDenied(404, f"no login is stored for registry {host!r}")
        await self._commit([Delete(keys.registry_login_key(host))])
        return record


def _revocation(cert: NodeCertificate, now: float) -> Put:
    revoked = RevokedCertificate(
        serial=cert.serial, node=cert.node, revoked_at=now, not_after=cert.not_after
    )
    return Put(keys.revoked_key(cert.serial), _json(revoked))
