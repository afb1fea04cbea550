"""What the workstation keeps of a cluster it set up: ``<state>/`` =
``$XDG_STATE_HOME/theseus/clusters/<cluster>/`` unless ``--state-dir`` says otherwise.

  pki/                  the cluster CA (ca.pem, ca-key.pem), the servers' etcd client
                        certificate, the first admin token (admin.token, 0600)
  pki/hosts/<name>/     each server host's certificates (its API's, its etcd member's),
                        issued once for its advertise address and reused, so that a second
                        run writes nothing
  cluster.json          the cluster's server hosts: they cannot change once set up

Owns the files each host should have (``desired_files``). Called by ``theseus.provision.run``
and ``theseus.cli.provision_cmd``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from theseus.cluster.certs import ETCD_CLIENT, issue_client_cert
from theseus.cluster.commands import default_state_dir
from theseus.cluster.secure import ADMIN_TOKEN_FILE
from theseus.provision.hosts import Host, HostsFile
from theseus.provision.plan import DesiredFile
from theseus.provision.services import env_text, services_of
from theseus.security import pki
from theseus.security.files import PkiDir, write_private


class ClusterChangeRefused(ValueError):
    """The hosts file changes the server hosts of a cluster already set up."""


class ClusterRecord(BaseModel):
    cluster: str
    servers: list[tuple[str, str]]  # (name, advertise) of each server host
    cluster_id: str | None = None  # the label of its tasks' containers (teardown's)


def state_dir_for(cluster: str, explicit: Path | None = None) -> Path:
    return explicit if explicit is not None else default_state_dir() / "clusters" / cluster


class Workstation:
    def __init__(self, root: Path, cluster: str) -> None:
        self.root = root
        self.cluster = cluster
        self.pki = PkiDir(root / "pki")

    @property
    def record_path(self) -> Path:
        return self.root / "cluster.json"

    @property
    def admin_token_path(self) -> Path:
        return self.pki.root / ADMIN_TOKEN_FILE

    def admin_token(self) -> str | None:
        path = self.admin_token_path
        return path.read_text().strip() if path.is_file() else None

    def record(self) -> ClusterRecord | None:
        try:
            return ClusterRecord.model_validate_json(self.record_path.read_text())
        except FileNotFoundError:
            return None

    def check_servers(self, hosts: HostsFile) -> None:
        """Refuse a file whose server hosts differ from those the cluster was set up with
        (etcd's membership would have to change: out of scope)."""
        record = self.record()
        if record is None:
            return
        wanted = [(h.name, h.advertise) for h in hosts.servers]
        had = [tuple(s) for s in record.servers]
        if had != wanted:
            raise ClusterChangeRefused(
                f"cluster {hosts.cluster} was set up with the server hosts "
                f"{', '.join(f'{n} ({a})' for n, a in had)}; the file has "
                f"{', '.join(f'{n} ({a})' for n, a in wanted)}. Adding or removing server "
                "hosts (etcd members) of an existing cluster is not supported: only agent "
                "hosts may be added. Tear it down first to start again."
            )

    def save_record(self, hosts: HostsFile, cluster_id: str | None) -> None:
        record = ClusterRecord(
            cluster=hosts.cluster,
            servers=[(h.name, h.advertise) for h in hosts.servers],
            cluster_id=cluster_id,
        )
        write_private(self.record_path, record.model_dump_json(indent=2).encode() + b"\n")

    def ensure_ca(self) -> None:
        if not self.pki.has_ca_key():
            self.root.mkdir(parents=True, exist_ok=True)
            self.pki.write_ca(pki.create_ca(self.cluster))

    def _host_pki(self, host: Host) -> PkiDir:
        """The host's certificates, issued for its advertise address (again if it changed)."""
        files = PkiDir(self.pki.root / "hosts" / host.name)
        marker = files.root / "advertise"
        if marker.is_file() and marker.read_text().strip() == host.advertise:
            return files
        ca = self.pki.read_ca_pair()
        files.write(
            "server",
            pki.issue(
                ca,
                name=host.name,
                role=pki.Role.SERVER,
                addresses=[host.advertise],
                days=pki.SERVER_DAYS,
            ),
        )
        member = f"etcd-{host.name}"
        files.write(
            member,
            pki.issue(
                ca,
                name=member,
                role=pki.Role.ETCD,
                addresses=[host.advertise],
                days=pki.SERVER_DAYS,
            ),
        )
        write_private(marker, host.advertise.encode() + b"\n", 0o644)
        return files

    def desired_files(self, hosts: HostsFile, host: Host) -> tuple[DesiredFile, ...]:
        """Every file of ``<prefix>/etc/theseus`` on ``host``, secrets excluded (the join
        token is added by the agents step, the admin token never leaves the workstation)."""
        files: list[DesiredFile] = []
        if host.is_server:
            issue_client_cert(self.pki, ETCD_CLIENT)
            own = self._host_pki(host)
            member = f"etcd-{host.name}"
            files += [
                DesiredFile("pki/ca.pem", self.pki.ca_cert.read_bytes()),
                # The servers sign the agents' certificates at join.
                DesiredFile("pki/ca-key.pem", self.pki.ca_key.read_bytes(), 0o600),
                DesiredFile("pki/server.pem", own.cert("server").read_bytes()),
                DesiredFile("pki/server-key.pem", own.key("server").read_bytes(), 0o600),
                DesiredFile(f"pki/{member}.pem", own.cert(member).read_bytes()),
                DesiredFile(f"pki/{member}-key.pem", own.key(member).read_bytes(), 0o600),
                DesiredFile(f"pki/{ETCD_CLIENT}.pem", self.pki.cert(ETCD_CLIENT).read_bytes()),
                DesiredFile(
                    f"pki/{ETCD_CLIENT}-key.pem", self.pki.key(ETCD_CLIENT).read_bytes(), 0o600
                ),
            ]
        for service in services_of(hosts, host):
            files.append(DesiredFile(f"{service.name}.env", env_text(service).encode(), 0o600))
        return tuple(files)

    def save_host(self, host: Host, data: dict[str, object]) -> None:
        path = self.root / "hosts" / f"{host.name}.json"
        write_private(path, json.dumps(data, indent=2).encode() + b"\n")
