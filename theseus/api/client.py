"""Typed clients for the server's HTTP API, over httpx.

``ServerClient`` (sync) serves the CLI; ``AsyncServerClient`` (``theseus.api.agent_client``)
serves the agent, with this module's errors and answer handling. Both take one
server address or several (a list, or a comma-separated string): a call goes to the server
that answered last and moves on to the next one when it cannot be reached or answers 503
(it lost etcd), so any server may die while the others carry on. Every API call may be sent
again safely (deploy, scale and remove are idempotent; reports and heartbeats repeat state),
which is what makes this failover transparent. Both raise ``ServerUnreachable`` when no
server answers and ``ApiError`` (with the server's message and field paths) on a 4xx/5xx.
``ServerClient`` reads by index (``theseus.server.client_index``): its writes are answered
once etcd has them, and each call sees at least what the previous ones saw, on any server.
The transport is injectable for tests.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from theseus.api.failover import ServerList
from theseus.api.rollouts import DeploymentList, VersionList
from theseus.api.schemas import (
    INDEX_HEADER,
    CleanupResult,
    DeployResult,
    GroupList,
    Health,
    NodeInfo,
    NodeList,
    RegistryService,
    StatsList,
    TaskInfo,
    TaskList,
    TaskStats,
)
from theseus.model.deployments import DeploymentRecord

DEFAULT_SERVER = "http://127.0.0.1:5000"


class ServerUnreachable(ConnectionError):
    def __init__(self, address: str, cause: Exception) -> None:
        self.address = address
        self.cause = cause
        super().__init__(
            f"cannot reach the Theseus server at {address} ({cause.__class__.__name__})"
        )


class ApiError(RuntimeError):
    def __init__(
        self,
        status: int,
        message: str,
        details: list[dict[str, str]],
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.details = details
        self.retry_after = retry_after  # seconds, when the server said when to come back
        lines = [message] + [f"  {d.get('path')}: {d.get('message')}" for d in details]
        super().__init__("\n".join(lines))


def raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text or response.reason_phrase}
    if isinstance(body, dict) and "detail" in body and "message" not in body:
        detail = body["detail"]
        body = {"message": detail if isinstance(detail, str) else json.dumps(detail)}
    message = (
        str(body.get("message", response.reason_phrase)) if isinstance(body, dict) else str(body)
    )
    details = body.get("details", []) if isinstance(body, dict) else []
    raise ApiError(response.status_code, message, list(details), retry_after_of(response))


def retry_after_of(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is not used by Theseus servers)."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def may_have_arrived(exc: httpx.TransportError) -> bool:
    """Whether the server may have received (and acted on) the request before the error: only
    a failure to connect proves it did not."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def after_error(
    servers: ServerList, address: str, exc: httpx.TransportError, last: bool, once: bool
) -> None:
    """A request to ``address`` failed in transport: raise ``ServerUnreachable``, or return to
    have it sent to the next server. ``once``: as in ``ServerClient._request``."""
    servers.failed(address)
    if last or (once and may_have_arrived(exc)):
        raise ServerUnreachable(str(servers), exc) from exc


def index_of(response: httpx.Response) -> int:
    """The index an answer carries (0 if none: an error, or an older server)."""
    try:
        return int(response.headers.get(INDEX_HEADER, 0))
    except ValueError:
        return 0


def answer_stands(servers: ServerList, address: str, response: httpx.Response, last: bool) -> bool:
    """Whether ``address``'s answer is the call's (raising ``ApiError`` for a 4xx/5xx); False:
    send the call to the next server. 503 is what a server answers when it cannot reach etcd,
    and another one may."""
    if response.status_code == 503 and not last:
        servers.failed(address)
        return False
    servers.worked(address)
    raise_for(response)
    return True


def labels_param(labels: list[str] | None) -> dict[str, str]:
    return {} if labels is None else {"labels": json.dumps(sorted(set(labels)))}


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class ServerClient:
    """Blocking client, for the CLI and tests. ``tls``: the context that verifies the servers
    (the cluster CA; ``theseus.security.tls.client_context``); ``token``: an API token."""

    def __init__(
        self,
        address: str | Sequence[str] = DEFAULT_SERVER,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,  # None except in tests
        tls: ssl.SSLContext | None = None,
        token: str | None = None,
    ) -> None:
        self.servers = ServerList(address)
        self._http = httpx.Client(
            timeout=timeout, transport=transport, verify=tls or True, headers=auth_headers(token)
        )
        # The highest index any answer carried: sent with every call, so that a write is
        # answered once etcd has it and what follows reads at least that state, on any
        # server (``theseus.server.client_index``).
        self.index = 0

    @property
    def address(self) -> str:
        """The server the next call goes to first."""
        return self.servers.current

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, once: bool = False, **kwargs: Any) -> httpx.Response:
        """``once``: the request is not idempotent; after an error that may have come once it
        reached a server, it is not sent to the next one (``may_have_arrived``)."""
        attempts = self.servers.attempts()
        headers = {**(kwargs.pop("headers", None) or {}), INDEX_HEADER: str(self.index)}
        for n, address in enumerate(attempts, 1):
            try:
                response = self._http.request(method, address + path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                after_error(self.servers, address, exc, n == len(attempts), once)
                continue
            self.index = max(self.index, index_of(response))
            if answer_stands(self.servers, address, response, n == len(attempts)):
                return response
        raise AssertionError("unreachable: attempts() is never empty")

    def request(self, method: str, path: str, once: bool = False, **kwargs: Any) -> httpx.Response:
        """A call to any route, with this client's failover and errors (``ApiError``)."""
        return self._request(method, path, once, **kwargs)

    def health(self) -> Health:
        return Health.model_validate(self._request("GET", "/v1/health").json())

    def metrics(self) -> str:
        """``GET /metrics``: the server's Prometheus metrics, in Prometheus's text format
        (parse with ``prometheus_client.parser.text_string_to_metric_families``)."""
        return self._request("GET", "/metrics").text

    def deploy(
        self,
        document: str | bytes,
        content_type: str = "application/x-yaml",
        dry_run: bool = False,
    ) -> DeployResult:
        """Apply a document; ``dry_run``: only say what it would do."""
        response = self._request(
            "POST",
            "/deploy",
            content=document,
            headers={"Content-Type": content_type},
            params={"dry_run": "true"} if dry_run else None,
        )
        return DeployResult.model_validate(response.json())

    def groups(self, service: str | None = None) -> GroupList:
        params = {"service": service} if service else {}
        return GroupList.model_validate(self._request("GET", "/v1/groups", params=params).json())

    def scale(self, service: str, instances: int, labels: list[str] | None = None) -> DeployResult:
        body = {"instances": instances, "labels": labels}
        response = self._request("POST", f"/v1/groups/{service}/scale", json=body)
        return DeployResult.model_validate(response.json())

    def remove(self, service: str, labels: list[str] | None = None) -> DeployResult:
        response = self._request("DELETE", f"/v1/groups/{service}", params=labels_param(labels))
        return DeployResult.model_validate(response.json())

    def tasks(
        self,
        service: str | None = None,
        node: str | None = None,
        include_stopped: bool = False,
        limit: int | None = None,
        after: str | None = None,
    ) -> TaskList:
        """The tasks, or with ``limit`` one page of them: pass its ``next`` as ``after`` for
        the following page (``next`` is None after the last)."""
        params: dict[str, str] = {}
        if service:
            params["service"] = service
        if node:
            params["node"] = node
        if include_stopped:
            params["all"] = "true"
        if limit is not None:
            params["limit"] = str(limit)
        if after is not None:
            params["after"] = after
        return TaskList.model_validate(self._request("GET", "/v1/tasks", params=params).json())

    def task(self, task_id: str) -> TaskInfo:
        return TaskInfo.model_validate(self._request("GET", f"/v1/tasks/{task_id}").json())

    def task_stats(
        self, task_id: str, since: float | None = None, limit: int | None = None
    ) -> TaskStats:
        """The task's recent samples from its node's agent (``since``: newer than that wall
        clock time; ``limit``: at most that many, the newest)."""
        params: dict[str, str] = {}
        if since is not None:
            params["since"] = str(since)
        if limit is not None:
            params["limit"] = str(limit)
        response = self._request("GET", f"/v1/tasks/{task_id}/stats", params=params)
        return TaskStats.model_validate(response.json())

    def stats(self, service: str | None = None) -> StatsList:
        """The latest sample of every running task (of ``service``), from their agents."""
        params = {"service": service} if service else {}
        return StatsList.model_validate(self._request("GET", "/v1/stats", params=params).json())

    def nodes(self) -> NodeList:
        return NodeList.model_validate(self._request("GET", "/v1/nodes").json())

    def node(self, name: str) -> NodeInfo:
        return NodeInfo.model_validate(self._request("GET", f"/v1/nodes/{name}").json())

    def drain_node(self, name: str, enable: bool = True) -> NodeInfo:
        response = self._request("POST", f"/v1/nodes/{name}/drain", json={"enable": enable})
        return NodeInfo.model_validate(response.json())

    def set_eligibility(self, name: str, eligible: bool) -> NodeInfo:
        body = {"eligible": eligible}
        response = self._request("POST", f"/v1/nodes/{name}/eligibility", json=body)
        return NodeInfo.model_validate(response.json())

    def deployments(self, include_finished: bool = False) -> DeploymentList:
        params = {"all": "true"} if include_finished else {}
        response = self._request("GET", "/v1/deployments", params=params)
        return DeploymentList.model_validate(response.json())

    def deployment(self, deployment_id: str) -> DeploymentRecord:
        response = self._request("GET", f"/v1/deployments/{deployment_id}")
        return DeploymentRecord.model_validate(response.json())

    def cancel_deployment(self, deployment_id: str, force: bool = False) -> DeploymentRecord:
        params = {"force": "true"} if force else {}
        # Not resent to another server: a second cancel would answer 409 (not running).
        path = f"/v1/deployments/{deployment_id}"
        response = self._request("DELETE", path, once=True, params=params)
        return DeploymentRecord.model_validate(response.json())

    def versions(self, service: str, labels: list[str] | None = None) -> VersionList:
        path = f"/v1/groups/{service}/versions"
        response = self._request("GET", path, params=labels_param(labels))
        return VersionList.model_validate(response.json())

    def rollback(
        self, service: str, version: int | None = None, labels: list[str] | None = None
    ) -> DeployResult:
        body = {"version": version, "labels": labels}
        # Without a version ("the previous one"), a second rollback would go back further:
        # it is not resent to another server after an error that may have come too late.
        once = version is None
        response = self._request("POST", f"/v1/groups/{service}/rollback", once=once, json=body)
        return DeployResult.model_validate(response.json())

    def restart(self, service: str, labels: list[str] | None = None) -> DeployResult:
        # Each restart replaces every task again: not resent after an error that may have
        # come too late (the first may have been written).
        body = {"labels": labels}
        response = self._request("POST", f"/v1/groups/{service}/restart", once=True, json=body)
        return DeployResult.model_validate(response.json())

    def cleanup(self) -> CleanupResult:
        return CleanupResult.model_validate(self._request("GET", "/cleanup").json())

    def registry(self, service: str) -> RegistryService:
        response = self._request("GET", f"/v1/registry/{service}")
        return RegistryService.model_validate(response.json())

    def logs(
        self,
        task_id: str,
        follow: bool = False,
        tail: int | None = None,
        container: str | None = None,
    ) -> Iterator[str]:
        """Yield the task's log lines (stdout and stderr interleaved) as text; ``container``:
        only that member of a pod."""
        params: dict[str, str] = {"follow": "true" if follow else "false"}
        if tail is not None:
            params["tail"] = str(tail)
        if container is not None:
            params["container"] = container
        yield from self.stream_lines(f"/v1/tasks/{task_id}/logs", params)

    def stream_lines(self, path: str, params: httpx.QueryParams | dict[str, str]) -> Iterator[str]:
        """The lines of a streamed answer (logs, events), from the first server that answers;
        once lines came, an error ends it (``ServerUnreachable``): another server would
        repeat them, and only the caller knows where to resume."""
        attempts = self.servers.attempts()
        for n, address in enumerate(attempts, 1):
            started = False  # once lines were yielded, another server would repeat them
            try:
                with self._http.stream(
                    "GET", f"{address}{path}", params=params, timeout=None
                ) as response:
                    if response.status_code >= 400:
                        response.read()  # the error's body, for ApiError
                    if not answer_stands(self.servers, address, response, n == len(attempts)):
                        continue
                    for line in response.iter_lines():
                        started = True
                        yield line
                return
            except httpx.TransportError as exc:
                after_error(self.servers, address, exc, n == len(attempts), once=started)
