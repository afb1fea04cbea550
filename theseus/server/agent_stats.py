"""Tasks' metrics, fetched from the agents of their nodes: the server keeps none itself.

``task_stats`` relays one task's samples (``GET /v1/tasks/{id}/stats`` on its node's agent);
``latest_stats`` asks each node holding tasks for the latest sample of all of them at once
(``GET /v1/stats`` on each agent, concurrently, each bounded by ``AGENT_TIMEOUT``), for
``theseus top``; ``node_metrics`` relays a node's Prometheus exposition (``GET /metrics`` on its
agent), so that Prometheus scrapes agents through a server with a read token, as it scrapes
kubelets through Kubernetes' API server. Called by ``theseus.server.routes.stats`` and
``theseus.server.routes.scrape``; ``tls`` is the server's client context in a secure cluster
(agents answer servers' certificates only).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

import httpx

from theseus.model.nodes import NodeRecord

AGENT_TIMEOUT = 5.0


class StatsUnavailable(RuntimeError):
    """The agent could not be reached or refused; ``status`` is the HTTP answer to give."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _url(node: NodeRecord, path: str, tls: ssl.SSLContext | None) -> str:
    scheme = "https" if tls is not None else "http"
    return f"{scheme}://{node.address}:{node.agent_port}{path}"


async def task_stats(
    node: NodeRecord, task_id: str, params: dict[str, str], tls: ssl.SSLContext | None = None
) -> bytes:
    """The agent's answer (``TaskStats`` JSON), as is; ``StatsUnavailable`` otherwise."""
    async with httpx.AsyncClient(timeout=AGENT_TIMEOUT, verify=tls or True) as client:
        try:
            response = await client.get(
                _url(node, f"/v1/tasks/{task_id}/stats", tls), params=params
            )
        except (httpx.TransportError, httpx.InvalidURL) as exc:  # down, or no address at all
            raise StatsUnavailable(502, f"agent of node {node.name} did not answer: {exc}") from exc
    if response.status_code >= 400:
        message = _message(response)
        raise StatsUnavailable(response.status_code, f"agent of node {node.name}: {message}")
    return response.content


async def node_metrics(node: NodeRecord, tls: ssl.SSLContext | None = None) -> httpx.Response:
    """The agent's ``/metrics`` answer (its body and content type are relayed as they are);
    ``StatsUnavailable`` otherwise."""
    async with httpx.AsyncClient(timeout=AGENT_TIMEOUT, verify=tls or True) as client:
        try:
            response = await client.get(_url(node, "/metrics", tls))
        except (httpx.TransportError, httpx.InvalidURL) as exc:  # down, or no address at all
            raise StatsUnavailable(502, f"agent of node {node.name} did not answer: {exc}") from exc
    if response.status_code >= 400:
        message = _message(response)
        raise StatsUnavailable(response.status_code, f"agent of node {node.name}: {message}")
    return response


async def latest_stats(
    nodes: Iterable[NodeRecord], tls: ssl.SSLContext | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every task's latest sample on ``nodes`` (``TaskStats`` JSON objects), and the nodes
    whose agent did not answer."""
    nodes = list(nodes)
    async with httpx.AsyncClient(timeout=AGENT_TIMEOUT, verify=tls or True) as client:

        async def one(node: NodeRecord) -> list[dict[str, Any]] | None:
            try:
                response = await client.get(_url(node, "/v1/stats", tls))
                response.raise_for_status()
                tasks: list[dict[str, Any]] = response.json()["tasks"]
                return tasks
            except (httpx.HTTPError, httpx.InvalidURL, ValueError, KeyError, TypeError):
                return None

        answers = await asyncio.gather(*(one(node) for node in nodes))
    tasks: list[dict[str, Any]] = []
    unreachable: list[str] = []
    for node, answer in zip(nodes, answers, strict=True):
        if answer is None:
            unreachable.append(node.name)
        else:
            tasks.extend(answer)
    return tasks, unreachable


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["message"])
    except (ValueError, KeyError, TypeError):
        return response.text
