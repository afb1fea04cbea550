"""Whether an etcd member answers its health check, over plain HTTP or over TLS with a client
certificate (a member started with ``--client-cert-auth`` refuses a probe without one).

Called by ``theseus.cluster.local`` (``theseus up`` waiting for its members), the test kit and
the benchmarks. Over TLS the probe presents the member's own certificate (it is a client
certificate too) and checks the member's against the cluster CA and the host dialled.
"""

from __future__ import annotations

import ssl

import httpx

from theseus.cluster.argv import EtcdMember
from theseus.security.files import PkiDir
from theseus.security.tls import client_context


def etcd_answers(url: str, context: ssl.SSLContext | None = None, timeout: float = 1.0) -> bool:
    """``url`` (a member's ``/health``) says the member is healthy."""
    try:
        if context is None:
            response = httpx.get(url, timeout=timeout)
        else:
            response = httpx.get(url, timeout=timeout, verify=context)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and '"true"' in response.text


def member_context(member: EtcdMember) -> ssl.SSLContext | None:
    """The TLS context the launcher reaches ``member`` with (None: plain HTTP)."""
    if member.pki_dir is None:
        return None
    return client_context(PkiDir(member.pki_dir), member.cert_name)


def member_healthy(member: EtcdMember, timeout: float = 1.0) -> bool:
    return etcd_answers(member.health_url, member_context(member), timeout)
