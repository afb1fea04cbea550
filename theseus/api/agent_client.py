"""The agent's client for the server's HTTP API: ``AsyncServerClient``, over httpx with
aiohttp's transport (``theseus.api.aiohttp_transport``).

Called by the agent (``theseus.agent``: registration, heartbeats, the assignments' long-poll,
reports, certificate renewals, registry logins, and the registry reads it serves its
containers) and by bench/hollow.py's hollow nodes. It fails over between servers, and raises
``ServerUnreachable`` and ``ApiError``, as ``theseus.api.client.ServerClient`` does, with the
same helpers.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from theseus.api.access import CertificateAnswer, CertificateRequest, RegistryLoginSecret
from theseus.api.aiohttp_transport import aiohttp_transport
from theseus.api.client import (
    DEFAULT_SERVER,
    ApiError,
    after_error,
    answer_stands,
    auth_headers,
    index_of,
    labels_param,
    raise_for,
)
from theseus.api.failover import ServerList
from theseus.api.peer_index import PeerIndexes
from theseus.api.rollouts import DeploymentList, VersionList
from theseus.api.schemas import (
    INDEX_HEADER,
    AssignmentList,
    DeployResult,
    HeartbeatAnswer,
    HeartbeatBody,
    NodeRegistration,
    NodeUsage,
    RegistrationAnswer,
    RegistryService,
    RegistryWatch,
    ReportBatch,
)
from theseus.model.deployments import DeploymentRecord

# With several servers, a heartbeat held by a hung server must give up soon enough to reach
# another one before the node's liveness lease runs out (4 s by default). With one server
# there is nowhere else to go, and the default timeout applies.
HEARTBEAT_FAILOVER_TIMEOUT = 1.5
# An agent's connections to its server stay open this long while idle (httpx's default: 5 s).
# At 1,000 nodes an agent heartbeats every 10 s (``theseus.server.heartbeats``): with 5 s
# every heartbeat opened a new connection, in a secure cluster a new mutual-TLS handshake,
# which doubled the server's CPU per heartbeat (bench/security.py). Below the server's own
# idle limit (``theseus server``: 75 s), so that the server never closes one first.
KEEPALIVE_EXPIRY = 60.0
AGENT_LIMITS = httpx.Limits(
    max_connections=20, max_keepalive_connections=10, keepalive_expiry=KEEPALIVE_EXPIRY
)


class AsyncServerClient:
    """Asyncio client, for the agent (``tls``: its context, with its certificate)."""

    def __init__(
        self,
        address: str | Sequence[str] = DEFAULT_SERVER,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,  # None except in tests
        tls: ssl.SSLContext | None = None,
        token: str | None = None,
    ) -> None:
        self.servers = ServerList(address)
        self._transport = transport or aiohttp_transport(AGENT_LIMITS, tls)
        self._timeout = httpx.Timeout(timeout)
        # Owns the transport (``aclose``) and streams the logs; the calls go past it (``_send``).
        self._http = httpx.AsyncClient(
            timeout=self._timeout, transport=self._transport, headers=auth_headers(token)
        )
        self._headers = self._http.headers  # httpx's defaults, and the token
        # What each server has answered: the index a report asks of another one.
        self.peer_indexes = PeerIndexes()

    @property
    def address(self) -> str:
        """The server the next call goes to first."""
        return self.servers.current

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self, method: str, path: str, once: bool = False, by_peers: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """``once``: as ``ServerClient._request``; ``by_peers``: ask each server for the
        index the others answered (``theseus.api.peer_index``)."""
        attempts = self.servers.attempts()
        for n, address in enumerate(attempts, 1):
            asked = self.peer_indexes.asked_of(address) if by_peers else None
            headers = None if asked is None else {INDEX_HEADER: str(asked)}
            try:
                response = await self._send(method, address + path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                after_error(self.servers, address, exc, n == len(attempts), once)
                continue
            if len(attempts) > 1:  # with one server there is no other to ask it of
                self.peer_indexes.answered(address, index_of(response))
            if answer_stands(self.servers, address, response, n == len(attempts)):
                return response
        raise AssertionError("unreachable: attempts() is never empty")

    async def _send(
        self,
        method: str,
        url: str,
        params: dict[str, str] | None = None,
        json: Any = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request handed to the transport, as ``httpx.AsyncClient.request`` sends it
        (the client's headers and timeout, the body read), without the client's steps these
        calls do not use: its cookie jar, which parsed every answer for cookies through
        urllib's, URL merging, authentication and redirect hooks. At 5,000 hollow nodes the
        client around the transport was 27 % of an agent's CPU; a call now costs about what
        a bare httpx call does (bench/agent_requests.py --client, BENCHMARKS.md).
        ``timeout``: seconds, or None for the client's; ``headers``: more than the client's."""
        limit = self._timeout if timeout is None else httpx.Timeout(timeout)
        request = httpx.Request(
            method,
            url,
            params=params,
            json=json,
            headers=self._headers if headers is None else {**self._headers, **headers},
            extensions={"timeout": limit.as_dict()},
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def renew_certificate(self, node: str, request: CertificateRequest) -> CertificateAnswer:
        response = await self._request(
            "POST", f"/v1/agent/{node}/certificate", json=request.model_dump()
        )
        return CertificateAnswer.model_validate(response.json())

    async def registry_login(self, node: str, host: str) -> RegistryLoginSecret | None:
        """The stored login of image registry ``host``, for this agent's pulls; ``None``
        when none is stored."""
        try:
            response = await self._request("GET", f"/v1/agent/{node}/registry-logins/{host}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return RegistryLoginSecret.model_validate(response.json())

    async def register(self, registration: NodeRegistration) -> RegistrationAnswer:
        response = await self._request(
            "POST", "/v1/agent/register", json=registration.model_dump(mode="json")
        )
        return RegistrationAnswer.model_validate(response.json())

    async def heartbeat(self, node: str, usage: NodeUsage | None = None) -> HeartbeatAnswer:
        """Refresh the node's liveness (``usage``: what its tasks use, for ``theseus
        nodes``); the answer carries the pace the server wants now."""
        several = len(self.servers.addresses) > 1
        timeout = HEARTBEAT_FAILOVER_TIMEOUT if several else None  # None: the client's
        body = None if usage is None else HeartbeatBody(usage=usage).model_dump(mode="json")
        response = await self._request(
            "POST", f"/v1/agent/{node}/heartbeat", json=body, timeout=timeout
        )
        return HeartbeatAnswer.model_validate(response.json())

    async def assignments(self, node: str, index: int, wait: float) -> AssignmentList:
        """Long-poll: returns when the node's assignments change after ``index``, or after
        ``wait`` seconds with the current list."""
        response = await self._request(
            "GET",
            f"/v1/agent/{node}/assignments",
            params={"index": str(index), "wait": str(wait)},
            timeout=wait + 10.0,
        )
        return AssignmentList.model_validate(response.json())

    async def report(self, node: str, batch: ReportBatch) -> None:
        path = f"/v1/agent/{node}/reports"
        await self._request("POST", path, by_peers=True, json=batch.model_dump(mode="json"))

    async def deployments(self, include_finished: bool = False) -> DeploymentList:
        params = {"all": "true"} if include_finished else {}
        response = await self._request("GET", "/v1/deployments", params=params)
        return DeploymentList.model_validate(response.json())

    async def deployment(self, deployment_id: str) -> DeploymentRecord:
        response = await self._request("GET", f"/v1/deployments/{deployment_id}")
        return DeploymentRecord.model_validate(response.json())

    async def cancel_deployment(self, deployment_id: str, force: bool = False) -> DeploymentRecord:
        params = {"force": "true"} if force else {}
        path = f"/v1/deployments/{deployment_id}"
        response = await self._request("DELETE", path, once=True, params=params)
        return DeploymentRecord.model_validate(response.json())

    async def versions(self, service: str, labels: list[str] | None = None) -> VersionList:
        path = f"/v1/groups/{service}/versions"
        response = await self._request("GET", path, params=labels_param(labels))
        return VersionList.model_validate(response.json())

    async def rollback(
        self, service: str, version: int | None = None, labels: list[str] | None = None
    ) -> DeployResult:
        body = {"version": version, "labels": labels}
        once = version is None
        path = f"/v1/groups/{service}/rollback"
        response = await self._request("POST", path, once=once, json=body)
        return DeployResult.model_validate(response.json())

    async def registry(self, service: str) -> RegistryService:
        response = await self._request("GET", f"/v1/registry/{service}")
        return RegistryService.model_validate(response.json())

    async def registry_watch(self, services: list[str], index: int, wait: float) -> RegistryWatch:
        """Long-poll: returns when one of ``services`` changes after ``index``."""
        response = await self._request(
            "GET",
            "/v1/registry/watch",
            params={"services": ",".join(services), "index": str(index), "wait": str(wait)},
            timeout=wait + 10.0,
        )
        return RegistryWatch.model_validate(response.json())

    async def stream_logs(self, url: str, params: dict[str, str]) -> AsyncIterator[bytes]:
        """Raw byte stream from an absolute URL (used by the server to proxy agent logs)."""
        async with self._http.stream("GET", url, params=params, timeout=None) as response:
            raise_for(response)
            async for chunk in response.aiter_bytes():
                yield chunk
