"""Setting up a secure cluster's credentials on one machine: the CA, the servers'
certificates, the first admin token and a join token.

Called by ``theseus up --secure`` (``theseus.cluster.local``) and by the test kit
(``tests/kit/secure.py``); docs/security.md does the same steps by hand with ``theseus ca``,
``theseus acl bootstrap`` and ``theseus join-token``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import NamedTuple

from theseus.api.access_client import AccessApi
from theseus.api.client import ServerClient
from theseus.security import pki
from theseus.security.files import PkiDir, write_private
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


ADMIN_TOKEN_FILE = "admin.token"  # in the servers' pki dir, mode 0600, for ``theseus up``


class ClientAccess(NamedTuple):
    """How the launcher's own calls reach a cluster: TLS trusting its CA, and a token."""

    tls: ssl.SSLContext | None = None
    token: str | None = None

    def client(self, url: str | list[str], timeout: float = 10.0) -> ServerClient:
        return ServerClient(url, timeout=timeout, tls=self.tls, token=self.token)


def local_access(pki_dir: Path) -> ClientAccess:
    """What ``theseus up --secure`` keeps in its state dir: the CA and the admin token (a
    development cluster, without them: plain access)."""
    files = PkiDir(pki_dir)
    if not files.ca_cert.is_file():
        return ClientAccess()
    token_file = pki_dir / ADMIN_TOKEN_FILE
    token = token_file.read_text().strip() if token_file.is_file() else None
    return ClientAccess(client_context(ca_pem=files.read_ca()), token)


def ensure_admin_token(url: str | list[str], files: PkiDir) -> str:
    """The admin token of a cluster this machine bootstrapped: bootstrapped now, or read back
    from the state dir when the cluster (its etcd data) was bootstrapped by an earlier ``up``."""
    token_file = files.root / ADMIN_TOKEN_FILE
    if token_file.is_file():
        return token_file.read_text().strip()
    token = bootstrap_admin(url, files)
    write_private(token_file, token.encode() + b"\n")
    return token
