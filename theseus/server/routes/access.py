"""Credentials and membership over HTTP.

* ``GET /v1/ca``: the cluster CA's certificate (public: a joining agent pins it against its
  join token before it trusts this server with anything).
* ``POST /v1/join``: a join token and a CSR in, the agent's certificate out.
* ``POST /v1/agent/{node}/certificate``: an agent renews its certificate with the one it has.
* ``POST /v1/acl/bootstrap``: the first admin token, once per cluster.
* ``/v1/acl/tokens`` and ``/v1/acl/join-tokens``: create (the secret is in that answer only),
  list, revoke; ``GET /v1/acl/self``: who the caller is.
* ``DELETE /v1/nodes/{name}``: forget a node, revoke its certificate.
* ``GET /v1/audit``: the recent writes through the API, with who made them.

Who may call which is ``theseus.server.policy``'s table; the writes are
``theseus.server.access_writes``', whose refusals (``AccessDenied``) the app answers with their
status and message.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from theseus.api.access import (
    AuditList,
    CaAnswer,
    CallerInfo,
    CertificateAnswer,
    CertificateRequest,
    JoinRequest,
    JoinTokenCreate,
    JoinTokenCreated,
    JoinTokenInfo,
    JoinTokenList,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    TokenList,
)
from theseus.security import pki
from theseus.security.records import JoinTokenRecord, TokenRecord
from theseus.server.auth import ANONYMOUS, Caller
from theseus.server.context import ServerContext, context

router = APIRouter(tags=["access"])


def caller_of(request: Request) -> Caller:
    caller = getattr(request.state, "caller", None)
    return caller if isinstance(caller, Caller) else ANONYMOUS


def _token_info(record: TokenRecord) -> TokenInfo:
    return TokenInfo(
        id=record.id,
        name=record.name,
        scopes=record.scopes,
        created_at=record.created_at,
        expires_at=record.expires_at,
        created_by=record.created_by,
    )


def _join_info(record: JoinTokenRecord) -> JoinTokenInfo:
    return JoinTokenInfo(
        id=record.id,
        created_at=record.created_at,
        expires_at=record.expires_at,
        created_by=record.created_by,
    )


def _ca_pem(ctx: ServerContext) -> bytes:
    if ctx.ca_cert is None:
        raise HTTPException(404, "this server runs without TLS: the cluster has no CA")
    return ctx.ca_cert


@router.get("/v1/ca", response_model=CaAnswer)
async def ca(ctx: ServerContext = Depends(context)) -> CaAnswer:
    return CaAnswer(certificate=_ca_pem(ctx).decode(), cluster_id=ctx.cluster_id)


@router.post("/v1/join", response_model=CertificateAnswer)
async def join(body: JoinRequest, ctx: ServerContext = Depends(context)) -> CertificateAnswer:
    """Admit an agent: its join token must be valid and made for this cluster's CA, and its
    name must not be a live node's."""
    node, cert = await ctx.access.join(body.token, body.csr.encode(), body.address)
    return _certificate_answer(ctx, node, cert)


@router.post("/v1/agent/{node}/certificate", response_model=CertificateAnswer)
async def renew(
    node: str, body: CertificateRequest, ctx: ServerContext = Depends(context)
) -> CertificateAnswer:
    cert = await ctx.access.renew(node, body.csr.encode(), body.address)
    return _certificate_answer(ctx, node, cert)


def _certificate_answer(ctx: ServerContext, node: str, cert: bytes) -> CertificateAnswer:
    return CertificateAnswer(
        node=node,
        certificate=cert.decode(),
        ca=_ca_pem(ctx).decode(),
        not_after=pki.identity(cert).not_after.timestamp(),
    )


@router.post("/v1/acl/bootstrap", response_model=TokenCreated)
async def bootstrap(ctx: ServerContext = Depends(context)) -> TokenCreated:
    """The first admin token. Works once per cluster; afterwards 409."""
    secret, record = await ctx.access.bootstrap()
    return TokenCreated(token=secret, info=_token_info(record))


@router.get("/v1/acl/self", response_model=CallerInfo)
async def whoami(request: Request) -> CallerInfo:
    caller = caller_of(request)
    return CallerInfo(
        kind=caller.kind, name=caller.name, token_id=caller.token_id, scopes=list(caller.scopes)
    )


@router.get("/v1/acl/tokens", response_model=TokenList)
async def list_tokens(ctx: ServerContext = Depends(context)) -> TokenList:
    records = sorted(ctx.cache.access.tokens.values(), key=lambda r: (r.created_at, r.id))
    return TokenList(tokens=[_token_info(r) for r in records])


@router.post("/v1/acl/tokens", response_model=TokenCreated)
async def create_token(
    body: TokenCreate, request: Request, ctx: ServerContext = Depends(context)
) -> TokenCreated:
    secret, record = await ctx.access.create_token(
        body.name, body.scopes, body.ttl, created_by=caller_of(request).name
    )
    return TokenCreated(token=secret, info=_token_info(record))


@router.delete("/v1/acl/tokens/{token_id}", response_model=TokenInfo)
async def revoke_token(token_id: str, ctx: ServerContext = Depends(context)) -> TokenInfo:
    return _token_info(await ctx.access.revoke_token(token_id))


@router.get("/v1/acl/join-tokens", response_model=JoinTokenList)
async def list_join_tokens(ctx: ServerContext = Depends(context)) -> JoinTokenList:
    records = sorted(ctx.cache.access.join_tokens.values(), key=lambda r: (r.created_at, r.id))
    return JoinTokenList(join_tokens=[_join_info(r) for r in records])


@router.post("/v1/acl/join-tokens", response_model=JoinTokenCreated)
async def create_join_token(
    body: JoinTokenCreate, request: Request, ctx: ServerContext = Depends(context)
) -> JoinTokenCreated:
    secret, record = await ctx.access.create_join_token(body.ttl, caller_of(request).name)
    return JoinTokenCreated(token=secret, info=_join_info(record))


@router.delete("/v1/acl/join-tokens/{token_id}", response_model=JoinTokenInfo)
async def revoke_join_token(token_id: str, ctx: ServerContext = Depends(context)) -> JoinTokenInfo:
    return _join_info(await ctx.access.revoke_join_token(token_id))


@router.delete("/v1/nodes/{name}", status_code=204)
async def remove_node(name: str, ctx: ServerContext = Depends(context)) -> None:
    """Forget the node and revoke its certificate: its agent can no longer call the server,
    and its tasks are replaced elsewhere as a lost node's are."""
    if not await ctx.access.remove_node(name):
        raise HTTPException(404, f"no node {name!r}")


@router.get("/v1/audit", response_model=AuditList)
async def audit(
    since: float = Query(0.0, ge=0, le=1e10, description="Unix time."),
    limit: int = Query(1000, ge=1, le=10_000),
    ctx: ServerContext = Depends(context),
) -> AuditList:
    """Writes through the API in the last hour or so, oldest first."""
    return AuditList(records=await ctx.audit.read(since, limit))
