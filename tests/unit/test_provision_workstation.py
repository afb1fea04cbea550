"""What the workstation keeps of a cluster: certificates issued once (a second run writes
nothing), the server hosts fixed once set up, secrets kept out of the hosts' files."""

from __future__ import annotations

from pathlib import Path

import pytest

from theseus.provision.hosts import parse
from theseus.provision.workstation import ClusterChangeRefused, Workstation

TEXT = """
cluster: prod
hosts:
  - {name: s1, advertise: 198.18.0.11, role: both}
  - {name: a1, advertise: 198.18.0.12, role: agent}
"""


def test_host_files_are_issued_once_and_hold_no_token(tmp_path: Path) -> None:
    hosts = parse(TEXT, tmp_path / "hosts.yaml")
    ws = Workstation(tmp_path / "state", "prod")
    ws.ensure_ca()
    first = ws.desired_files(hosts, hosts.hosts[0])
    again = Workstation(tmp_path / "state", "prod").desired_files(hosts, hosts.hosts[0])
    assert first == again
    paths = {f.path: f for f in first}
    assert {"pki/ca.pem", "pki/server.pem", "pki/etcd-s1.pem", "pki/etcd-client.pem"} <= set(paths)
    assert paths["pki/ca-key.pem"].mode == 0o600 and paths["agent.env"].mode == 0o600
    assert all(b"TOKEN" not in f.content for f in first)
    # An agent host gets no certificate: it joins for its own.
    assert [f.path for f in ws.desired_files(hosts, hosts.hosts[1])] == ["agent.env"]


def test_a_new_advertise_address_gets_a_new_certificate(tmp_path: Path) -> None:
    ws = Workstation(tmp_path / "state", "prod")
    ws.ensure_ca()
    hosts = parse(TEXT, tmp_path / "hosts.yaml")
    before = {f.path: f for f in ws.desired_files(hosts, hosts.hosts[0])}
    moved = parse(TEXT.replace("198.18.0.11", "198.18.0.21"), tmp_path / "hosts.yaml")
    after = {f.path: f for f in ws.desired_files(moved, moved.hosts[0])}
    assert before["pki/server.pem"] != after["pki/server.pem"]
    assert before["pki/ca.pem"] == after["pki/ca.pem"]


def test_server_hosts_cannot_change_but_agents_can_be_added(tmp_path: Path) -> None:
    ws = Workstation(tmp_path / "state", "prod")
    hosts = parse(TEXT, tmp_path / "hosts.yaml")
    ws.check_servers(hosts)  # nothing set up yet
    ws.save_record(hosts, "c1")
    more_agents = parse(
        TEXT + "  - {name: a2, advertise: 198.18.0.13, role: agent}\n", tmp_path / "h.yaml"
    )
    ws.check_servers(more_agents)
    more_servers = TEXT.replace("role: agent", "role: server") + (
        "  - {name: s3, advertise: 198.18.0.13, role: server}\n"
    )
    with pytest.raises(ClusterChangeRefused, match="only agent hosts may be added"):
        ws.check_servers(parse(more_servers, tmp_path / "h.yaml"))
