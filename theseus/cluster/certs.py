"""The certificates a cluster's etcd needs, issued from the CA key pair in a ``PkiDir``: one
per member (role etcd, its host as SAN: it serves clients and peers and dials its peers) and
the servers' etcd client certificate.

Called by the launcher's callers before they start a TLS etcd: ``theseus up --secure``, the
test kit (``tests/kit/cluster.py``) and the benchmarks. The servers' API certificates are
not issued here. Certificates already in the directory are kept, so calling this again on a
cluster's state dir (a second ``up``) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from theseus.cluster.argv import EtcdMember, EtcdTlsFiles
from theseus.security.files import PkiDir
from theseus.security.pki import SERVER_DAYS, Role, issue

# The servers' client certificate: its common name is the etcd user it acts as under etcd's
# RBAC (which takes the certificate's CN as the user when client-cert-auth is on).
ETCD_CLIENT = "etcd-client"


def issue_etcd_certs(
    pki: PkiDir, members: Sequence[EtcdMember], days: int = SERVER_DAYS
) -> dict[str, EtcdTlsFiles]:
    """Each member's certificate ``etcd-<name>`` (issued if it is not there yet); the files
    of each, by member name (a member presents its own certificate to its peers, and the
    launcher's health probe presents it to the member)."""
    ca = pki.read_ca_pair()
    files: dict[str, EtcdTlsFiles] = {}
    for member in members:
        name = member.cert_name
        if not pki.has(name):
            pki.write(
                name, issue(ca, name=name, role=Role.ETCD, addresses=[member.host], days=days)
            )
        files[member.name] = EtcdTlsFiles(pki.ca_cert, pki.cert(name), pki.key(name))
    return files


def issue_client_cert(
    pki: PkiDir, name: str = ETCD_CLIENT, role: Role = Role.CLIENT, days: int = SERVER_DAYS
) -> EtcdTlsFiles:
    """A client certificate ``name`` (common name and file name; issued if it is not there
    yet), the three files ``theseus server --etcd-cacert/--etcd-cert/--etcd-key`` take
    (``ServerProcess.etcd_tls``)."""
    if not pki.has(name):
        pki.write(name, issue(pki.read_ca_pair(), name=name, role=role, addresses=[], days=days))
    return EtcdTlsFiles(pki.ca_cert, pki.cert(name), pki.key(name))


def etcd_client_files(pki: PkiDir, name: str = ETCD_CLIENT) -> EtcdTlsFiles:
    """Where ``issue_client_cert`` puts the client certificate ``name`` (nothing is issued)."""
    return EtcdTlsFiles(pki.ca_cert, pki.cert(name), pki.key(name))
