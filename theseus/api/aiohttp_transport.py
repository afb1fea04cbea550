"""The agent's HTTP transport: httpx's API over aiohttp's connections (``httpx-aiohttp``).

An agent makes a request every few seconds (heartbeat, assignments' long-poll, reports),
and in the scale benchmark 5,000 of them share two cores with the server. httpx's own
transport (httpcore, anyio, h11, all pure Python) spent about 570 µs of the agent's CPU per
request there; aiohttp's C-accelerated one, behind the same ``httpx.AsyncClient``, 330 µs
(``bench/agent_requests.py --client``). The client code, its tests' transports
(``httpx.MockTransport``, ``httpx.ASGITransport``) and its error handling stay httpx's.

Used by ``theseus.api.agent_client.AsyncServerClient`` when no transport is given.

One correction to the library: it maps every ``aiohttp.ClientConnectionError`` to
``httpx.ConnectTimeout``, a server that hung up mid-request included, and
``theseus.api.client.may_have_arrived`` must tell a request that never reached the server
(safe to send to another) from one that may have been acted on. ``_Transport`` raises
``httpx.ConnectError``/``ConnectTimeout`` only for a failure to connect, and
``httpx.ReadError``/``ReadTimeout`` for the rest.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


def aiohttp_transport(limits: httpx.Limits, tls: ssl.SSLContext | None) -> httpx.AsyncBaseTransport:
    """A transport of at most ``limits.max_connections`` connections, kept alive for
    ``limits.keepalive_expiry`` seconds; ``tls``: the context of HTTPS calls (the system's CAs
    without one). Its aiohttp session is made on first use, on the running loop."""
    return _Transport(verify=tls or True, limits=limits, trust_env=False)


class _Transport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise _corrected(exc, request) from exc.__cause__ or exc
        except TimeoutError as exc:  # a bare one: taken as one that may have arrived
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc


def _corrected(exc: httpx.TransportError, request: httpx.Request) -> httpx.TransportError:
    cause, message = exc.__cause__, str(exc)
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(cause, aiohttp.ClientConnectorError):  # refused, unreachable, TLS handshake
        return httpx.ConnectError(message, request=request)
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(cause, aiohttp.ClientConnectionError):  # hung up, reset: after connecting
        return httpx.ReadError(message, request=request)
    exc.request = request
    return exc
