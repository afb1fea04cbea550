"""TLS contexts for every connection Theseus makes or accepts, from a ``PkiDir``.

Called by the server and the agent (the contexts uvicorn serves with), by the HTTP clients
(``theseus.api.client``: the CLI's, the agent's, the server's calls to agents) and by
``theseus.store.etcd`` (the gRPC credentials are built from the same files).

Servers ask for a client certificate but do not require one (``CERT_OPTIONAL``): agents and
servers present theirs, the CLI and the dashboard authenticate with tokens instead; any
certificate presented must chain to the cluster CA, or the handshake fails.
"""

from __future__ import annotations

import ipaddress
import ssl

from theseus.security.files import PkiDir

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(pki: PkiDir, name: str, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.load_cert_chain(pki.cert(name), pki.key(name))
    context.load_verify_locations(cafile=pki.ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(
    pki: PkiDir | None = None, name: str | None = None, ca_pem: bytes | None = None
) -> ssl.SSLContext:
    """A context that trusts only the cluster CA (``pki``'s, or ``ca_pem``) and presents
    ``name``'s certificate when one is given. The hostname is checked against the certificate's
    addresses."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSION
    if ca_pem is not None:
        context.load_verify_locations(cadata=ca_pem.decode())
    elif pki is not None:
        context.load_verify_locations(cafile=pki.ca_cert)
    if pki is not None and name is not None:
        context.load_cert_chain(pki.cert(name), pki.key(name))
    return context


def unverified_context() -> ssl.SSLContext:
    """For exactly one request: a joining agent fetching the CA certificate, which it then
    checks against the pin in its join token before trusting anything else."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine's loopback: the only place Theseus serves plain HTTP
    without authentication (a development cluster)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
