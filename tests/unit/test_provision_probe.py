"""The probe ``theseus cluster`` runs on each host (``theseus.provision.probe``), run here as
it runs there: its source on a Python's stdin, one JSON argument, one JSON answer."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from theseus.provision.facts import HostFacts, probe_arguments, probe_source
from theseus.provision.hosts import parse


def _probe(tmp_path: Path, advertise: str, api: int) -> HostFacts:
    hosts = parse(
        f"cluster: c\nports: {{api: {api}}}\nhosts: [{{name: s, advertise: {advertise}, "
        f"role: both, install: {{prefix: {tmp_path}}}}}]",
        tmp_path / "hosts.yaml",
    )
    arguments = json.dumps(probe_arguments(hosts, hosts.hosts[0]))
    done = subprocess.run(
        [sys.executable, "-", arguments],
        input=probe_source(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return HostFacts.model_validate_json(done.stdout)


def test_a_fresh_host(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    facts = _probe(tmp_path, "127.0.0.1", port)
    assert facts.python[:2] == list(sys.version_info[:2])
    assert facts.own_address
    assert not facts.ports[str(port)].busy
    assert facts.build is None and not facts.venv and not facts.agent_joined
    assert not any(s.running for s in facts.services.values())
    assert list(tmp_path.iterdir()) == []  # it changed nothing


def test_a_taken_port_names_its_holder_and_a_foreign_address_is_not_ours(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        facts = _probe(tmp_path, "127.0.0.1", port)
        assert facts.ports[str(port)].busy and not facts.ports[str(port)].ours
        assert (
            "pytest" in facts.ports[str(port)].holder or "python" in facts.ports[str(port)].holder
        )
    # 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
    assert not _probe(tmp_path, "192.0.2.1", port).own_address
