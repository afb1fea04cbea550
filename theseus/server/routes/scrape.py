"""Prometheus through the servers: ``GET /v1/nodes/{name}/metrics`` relays a node's agent's
``/metrics``, and ``GET /v1/prometheus/targets`` lists one scrape target per ready node, in
Prometheus's HTTP service discovery format.

Why: in a secure cluster an agent answers only the servers' certificates, and Prometheus holds
none. It holds a read token, which every server takes; the server relays with its own client
certificate (``theseus.server.agent_stats.node_metrics``), as Kubernetes' API server proxies
``/api/v1/nodes/{node}/proxy/metrics/cadvisor``. On a development cluster the relay works
the same, so one scrape configuration serves both.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from theseus.server.agent_stats import StatsUnavailable, node_metrics
from theseus.server.context import ServerContext, context

router = APIRouter(tags=["tasks and nodes"])

_NOT_IN_A_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


@router.get("/v1/nodes/{name}/metrics", response_class=Response)
async def get_node_metrics(name: str, ctx: ServerContext = Depends(context)) -> Response:
    """The node's agent's Prometheus metrics (its tasks' containers with cAdvisor's names,
    and the agent's own), relayed as they are: 404 for an unknown node, 502 (or the agent's
    own error) when its agent does not answer."""
    node = ctx.cache.state.nodes.get(name)
    if node is None:
        raise HTTPException(404, f"no node {name!r}")
    try:
        answer = await node_metrics(node, ctx.agent_tls)
    except StatsUnavailable as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return Response(answer.content, media_type=answer.headers.get("content-type"))


@router.get("/v1/prometheus/targets")
async def prometheus_targets(
    request: Request, ctx: ServerContext = Depends(context)
) -> list[dict[str, Any]]:
    """One target per ready node for Prometheus's ``http_sd_configs``: this server (as the
    caller reached it) with ``__metrics_path__`` set to the node's relay, and the labels
    ``node`` and each of the node's attributes as ``attribute_<name>`` (a character that a
    Prometheus label name cannot hold becomes ``_``)."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    state = ctx.cache.state
    targets: list[dict[str, Any]] = []
    for name in sorted(state.alive):
        node = state.nodes.get(name)
        if node is None:
            continue
        labels = {"__metrics_path__": f"/v1/nodes/{name}/metrics", "node": name}
        for key, value in sorted(node.attributes.items()):
            labels[f"attribute_{_NOT_IN_A_LABEL_NAME.sub('_', key)}"] = value
        targets.append({"targets": [host], "labels": labels})
    return targets
