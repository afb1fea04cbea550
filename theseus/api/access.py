"""The shapes of the credential routes (``/v1/ca``, ``/v1/join``, ``/v1/acl/...``,
``/v1/audit``): what the server answers and the clients send. Secrets appear only in the
answers that create them (``TokenCreated.token``, ``JoinTokenCreated.token``), once."""

from __future__ import annotations

from pydantic import BaseModel, Field

from theseus.security.records import AuditRecord
from theseus.security.tokens import Scope

NODE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
DAY = 86400.0


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
