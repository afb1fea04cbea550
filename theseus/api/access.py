"""The shapes of the credential routes (``/v1/ca``, ``/v1/join``, ``/v1/acl/...``,
``/v1/audit``): what the server answers and the clients send. Secrets appear only in the
answers that create them (``TokenCreated.token``, ``JoinTokenCreated.token``), once; a
registry login's password goes in with ``RegistryLoginCreate`` and out only to agents
(``RegistryLoginSecret``), never in a list."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator

from theseus.security.records import AuditRecord
from theseus.security.tokens import Scope

NODE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
DAY = 86400.0
# A registry host as image names start with it: a DNS name or an IPv4 address, and a port.
REGISTRY_HOST = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?$"


def registry_host_problem(host: str) -> str | None:
    """Why ``host`` cannot be a registry's host, or ``None``. Docker takes an image's first
    path component for a registry only with a '.' or a ':' in it, or as ``localhost``: any
    other name would never be pulled from, so a login for it would be a mistake."""
    if not re.match(REGISTRY_HOST, host):
        return f"{host!r} is not a registry host (HOST or HOST:PORT, as image names start)"
    if "." not in host and ":" not in host and host != "localhost":
        return (
            f"{host!r} would not be taken for a registry in an image name: a registry host "
            "has a '.' or a ':PORT', or is 'localhost'"
        )
    return None


class RegistryLoginCreate(BaseModel):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=4096, repr=False)


class RegistryLoginInfo(BaseModel):
    """A stored registry login, without its password."""

    host: str
    username: str
    created_at: float
    created_by: str


class RegistryLoginList(BaseModel):
    logins: list[RegistryLoginInfo]


class RegistryLoginSecret(BaseModel):
    """What an agent gets for its pulls from ``host`` (its certificate, only)."""

    host: str
    username: str
    password: str = Field(repr=False)

    @field_validator("host")
    @classmethod
    def _a_host(cls, host: str) -> str:
        problem = registry_host_problem(host)
        if problem is not None:
            raise ValueError(problem)
        return host


class CaAnswer(BaseModel):
    certificate: str  # PEM; a joining agent checks its pin before trusting it
    cluster_id: str


class JoinRequest(BaseModel):
    token: str = Field(description="A join token from `theseus join-token`.")
    csr: str = Field(description="PEM certificate request; its common name is the node's name.")
    address: str = Field(description="The address the agent advertises (its certificate's).")


class CertificateRequest(BaseModel):
    csr: str
    address: str


class CertificateAnswer(BaseModel):
    node: str
    certificate: str  # PEM
    ca: str  # PEM
    not_after: float


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    scopes: list[Scope] = Field(min_length=1)
    ttl: float | None = Field(default=None, gt=0, description="Seconds; none: until revoked.")


class TokenInfo(BaseModel):
    id: str
    name: str
    scopes: list[Scope]
    created_at: float
    expires_at: float | None
    created_by: str


class TokenCreated(BaseModel):
    token: str  # the secret: shown this once
    info: TokenInfo


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class JoinTokenCreate(BaseModel):
    ttl: float = Field(default=DAY, gt=0, le=366 * DAY, description="Seconds (24 h default).")


class JoinTokenInfo(BaseModel):
    id: str
    created_at: float
    expires_at: float
    created_by: str


class JoinTokenCreated(BaseModel):
    token: str
    info: JoinTokenInfo


class JoinTokenList(BaseModel):
    join_tokens: list[JoinTokenInfo]


class CallerInfo(BaseModel):
    kind: str
    name: str
    token_id: str | None
    scopes: list[Scope]


class AuditList(BaseModel):
    records: list[AuditRecord]
