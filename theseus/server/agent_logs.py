"""A task's output, relayed from the agent of its node: the server holds no logs itself.

``open_task_logs`` opens the agent's stream (``GET /v1/tasks/{id}/logs`` on the node's agent
port) and hands back an iterator of its bytes that closes the connection when done or
abandoned. Called by the task routes (``theseus.server.routes.tasks``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx

from theseus.model.nodes import NodeRecord


class LogsUnavailable(RuntimeError):
    """The agent could not be reached or refused; ``status`` is the HTTP answer to give."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def open_task_logs(
    node: NodeRecord,
    task_id: str,
    follow: bool,
    tail: int | None,
    container: str | None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[bytes]:
    """The agent's stream of ``task_id``'s output, opened (so that an error is raised here,
    before any byte is sent); ``LogsUnavailable`` when it cannot be. ``tls``: the server's
    client context (its certificate, which the agent requires for this route)."""
    scheme = "https" if tls is not None else "http"
    url = f"{scheme}://{node.address}:{node.agent_port}/v1/tasks/{task_id}/logs"
    params = {"follow": "true" if follow else "false"}
    if tail is not None:
        params["tail"] = str(tail)
    if container is not None:
        params["container"] = container
    client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), verify=tls or True)
    try:
        request = client.build_request("GET", url, params=params)
        response = await client.send(request, stream=True)
    except (httpx.TransportError, httpx.InvalidURL) as exc:  # down, or no address at all
        await client.aclose()
        raise LogsUnavailable(502, f"agent of node {node.name} did not answer: {exc}") from exc
    if response.status_code >= 400:
        body = (await response.aread()).decode(errors="replace")
        await response.aclose()
        await client.aclose()
        raise LogsUnavailable(response.status_code, f"agent of node {node.name}: {body}")

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        finally:
            await response.aclose()
            await client.aclose()

    return relay()
