"""Setting up a secure cluster's credentials on one machine: the CA, the servers'
certificates, the first admin token and a join token.

Called by ``theseus up --secure`` (``theseus.cluster.local``) and by the test kit
(``tests/kit/secure.py``); docs/security.md does the same steps by hand with ``theseus ca``,
``theseus acl bootstrap`` and ``theseus join-token``.
"""

from __future__ import annotations

from pathlib import Path

from theseus.api.access_client import AccessApi
from theseus.api.client import ServerClient
from theseus.security import pki
from theseus.security.files import PkiDir
from theseus.security.tls import client_context


def prepare_pki(directory: Path, cluster: str, server_addresses: list[str]) -> PkiDir:
    """A CA (made once: an existing one is kept) and a server certificate naming
    ``server_addresses``, in ``directory`` (the servers' ``--pki-dir``)."""
    files = PkiDir(directory)
    if not files.has_ca_key():
        files.write_ca(pki.create_ca(cluster))
    issued = pki.issue(
        files.read_ca_pair(),
        name="server",
        role=pki.Role.SERVER,
        addresses=server_addresses,
        days=pki.SERVER_DAYS,
    )
    files.write("server", issued)
    return files


def secure_client(url: str | list[str], files: PkiDir, token: str | None = None) -> ServerClient:
    """A client that trusts only the cluster's CA."""
    return ServerClient(url, tls=client_context(ca_pem=files.read_ca()), token=token)


def bootstrap_admin(url: str | list[str], files: PkiDir) -> str:
    """The cluster's first admin token (``POST /v1/acl/bootstrap``; once per cluster)."""
    with secure_client(url, files) as client:
        return AccessApi(client).bootstrap().token


def new_join_token(url: str | list[str], files: PkiDir, admin_token: str, ttl: float) -> str:
    with secure_client(url, files, admin_token) as client:
        return AccessApi(client).create_join_token(ttl).token
