"""What the cluster stores about its credentials (JSON in etcd, under ``/theseus/acl/``).

Secrets of Theseus's own are never stored, only their hashes
(``theseus.security.tokens.secret_hash``). The one exception is a registry login's password,
which the agents must present to a registry as it is: in a secure cluster it is stored sealed
(``theseus.security.sealing``, under a key derived from the CA's, which etcd never holds), in
a development cluster as given; it is answered only to agents (by their certificates), and
never listed. Read by
the server's cache (``theseus.store.access``), written by the server's access writes
(``theseus.server.access_writes``), shown (without hashes) by the ACL routes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from theseus.security.sealing import SealError, open_sealed
from theseus.security.tokens import Scope


class TokenRecord(BaseModel):
    """An API token: ``id`` is public (it names the token in lists, audits and revocations)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    scopes: list[Scope]
    secret_hash: str
    created_at: float
    expires_at: float | None = None  # unix time; None: until revoked
    created_by: str = ""

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class JoinTokenRecord(BaseModel):
    """A join token: any number of agents may join with it until it expires or is revoked."""

    model_config = ConfigDict(frozen=True)

    id: str
    secret_hash: str
    created_at: float
    expires_at: float
    created_by: str = ""

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


class NodeCertificate(BaseModel):
    """The certificate a node holds now (the one issued at its join or latest renewal)."""

    model_config = ConfigDict(frozen=True)

    node: str
    serial: str  # hex: certificate serials are 159-bit integers, beyond JSON's safe range
    not_after: float
    issued_at: float


class RevokedCertificate(BaseModel):
    """A certificate that must no longer be accepted, kept until it would have expired."""

    model_config = ConfigDict(frozen=True)

    serial: str
    node: str
    revoked_at: float
    not_after: float


class Bootstrap(BaseModel):
    """That the first admin token was issued (once per cluster), and when."""

    model_config = ConfigDict(frozen=True)

    token_id: str
    at: float


class RegistryLogin(BaseModel):
    """The credentials of one private image registry (``theseus registry-login HOST``), for
    the agents' pulls from it. The password is either ``sealed`` (a secure cluster:
    ``theseus.security.sealing``, bound to ``host``) or ``password`` as given (a development
    cluster, or a record written before sealing); it goes only to agents, and the ``repr``
    shows neither."""

    model_config = ConfigDict(frozen=True)

    host: str  # "registry.example:5000": what image names start with
    username: str
    password: str | None = Field(default=None, repr=False)
    sealed: str | None = Field(default=None, repr=False)  # "v1:<base64 nonce + ciphertext>"
    created_at: float
    created_by: str = ""

    @model_validator(mode="after")
    def _one_password(self) -> RegistryLogin:
        if (self.password is None) == (self.sealed is None):
            raise ValueError("a registry login holds either password or sealed, not both")
        return self

    def open_password(self, key: bytes | None) -> str:
        """The password, opened with the cluster's sealing key (``None``: this server has
        none); ``SealError`` when it is sealed and ``key`` cannot open it."""
        if self.sealed is None:
            assert self.password is not None  # the validator's
            return self.password
        if key is None:
            raise SealError("sealed, and this server has no CA key to open it")
        return open_sealed(key, self.sealed, self.host)


class AuditRecord(BaseModel):
    """One write through the API: who (the token's name and id, or the anonymous caller of a
    development cluster), what (method, route, target) and the answer's status."""

    model_config = ConfigDict(frozen=True)

    at: float
    who: str
    token_id: str | None
    method: str
    path: str
    status: int
