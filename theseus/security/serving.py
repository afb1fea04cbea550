"""Serving TLS with uvicorn, and telling the app who is on the other end.

uvicorn verifies a client certificate (when its SSL context asks for one) but does not pass it
to the app: the ASGI TLS extension is not implemented (uvicorn#400, #2306). ``peer_aware``
wraps uvicorn's HTTP protocol class so that each connection's verified certificate reaches the
app in ``scope["extensions"]["tls"]``: ``client_cert_chain`` as the extension specifies (PEM)
and ``peer``, the certificate's ``theseus.security.pki.Identity``, read once per connection.

Used by ``theseus server`` and by the agent's own HTTP endpoint; read by
``theseus.server.auth`` and ``theseus.agent.http``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from theseus.security.pki import Identity, identity_of

Scope = dict[str, Any]


def peer_identity(scope: Mapping[str, Any]) -> Identity | None:
    """The verified client certificate's holder, or None (no TLS, or no certificate)."""
    tls = scope.get("extensions", {}).get("tls")
    peer = tls.get("peer") if isinstance(tls, dict) else None
    return peer if isinstance(peer, Identity) else None


def _tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    extension: dict[str, Any] = {
        "tls_version": ssl_object.version(),
        "client_cert_chain": [],
        "peer": None,
    }
    if der:
        cert = x509.load_der_x509_certificate(der)
        extension["client_cert_chain"] = [cert.public_bytes(serialization.Encoding.PEM).decode()]
        extension["peer"] = identity_of(cert)
    return extension


def peer_aware(protocol_class: type[Any]) -> type[Any]:
    """A subclass of uvicorn's ``protocol_class`` whose app sees the TLS peer (see above)."""

    class PeerAware(protocol_class):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            extension = _tls_extension(transport)
            if extension is None:
                return
            inner: Any = getattr(self, "app")  # noqa: B009 - set by uvicorn, untyped here

            async def app(scope: Scope, receive: Any, send: Any) -> None:
                if scope["type"] in ("http", "websocket"):
                    scope.setdefault("extensions", {})["tls"] = extension
                await inner(scope, receive, send)

            self.app = app

    PeerAware.__name__ = f"PeerAware{protocol_class.__name__}"
    return PeerAware


def http_protocol() -> type[Any]:
    """uvicorn's fastest available HTTP protocol, peer-aware (httptools when installed, as
    uvicorn's ``auto`` would pick)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return peer_aware(HttpToolsProtocol)
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return peer_aware(H11Protocol)
