"""The hosts file of ``theseus cluster``: defaults, paths, and refusals naming the field."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from theseus.provision.hosts import HostsFileError, field_path, parse

FILE = Path("/srv/cluster/hosts.yaml")

GOOD = """
cluster: prod
ssh: {user: admin, port: 2222, key: keys/id_ed25519, known_hosts: known_hosts}
hosts:
  - name: s1
    advertise: 198.18.0.11
    role: both
    attributes: {zone: a}
    host_volumes: {data: /srv/data, conf: /etc/app:ro}
  - name: a1
    address: 203.0.113.5
    advertise: 198.18.0.12
    role: agent
    ssh: {user: root}
    install: {prefix: /srv/a1, docker_host: unix:///run/a1/docker.sock}
"""


def _errors(text: str) -> str:
    with pytest.raises(HostsFileError) as caught:
        parse(text, FILE)
    return str(caught.value)


def test_defaults_and_overrides_resolve_per_host() -> None:
    hosts = parse(GOOD, FILE)
    s1, a1 = hosts.hosts
    assert hosts.cluster == "prod" and hosts.ports.api == 5000 and hosts.ports.etcd_peer == 2380
    assert s1.address == "198.18.0.11"  # SSH reaches it at its advertise address by default
    assert (s1.user, s1.port, s1.sudo) == ("admin", 2222, True)
    assert s1.key == Path("/srv/cluster/keys/id_ed25519")  # relative to the file
    assert s1.known_hosts == Path("/srv/cluster/known_hosts")
    assert s1.prefix == PurePosixPath("/")
    assert s1.docker_host == "unix:///var/run/docker.sock"
    assert s1.host_volumes == {"data": "/srv/data", "conf": "/etc/app:ro"}
    # A host's own ssh: overrides key by key, the rest comes from the defaults.
    assert (a1.address, a1.user, a1.port, a1.sudo) == ("203.0.113.5", "root", 2222, False)
    assert a1.prefix == PurePosixPath("/srv/a1")
    assert a1.docker_host == "unix:///run/a1/docker.sock"
    assert [h.name for h in hosts.servers] == ["s1"]
    assert [h.name for h in hosts.agents] == ["s1", "a1"]


def test_home_is_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/op")
    hosts = parse(
        "cluster: c\nssh: {key: ~/.ssh/k}\nhosts: [{name: s, advertise: 10.9.0.1, role: both}]",
        FILE,
    )
    assert hosts.hosts[0].key == Path("/home/op/.ssh/k")
    assert hosts.hosts[0].known_hosts == Path("/home/op/.ssh/known_hosts")


def test_a_missing_field_is_named_by_its_path() -> None:
    text = GOOD + "  - name: a2\n    role: agent\n"
    assert "hosts[2].advertise: field required" in _errors(text)


def test_bad_values_are_named() -> None:
    text = GOOD.replace("role: agent", "role: worker").replace("name: s1", "name: S_1")
    errors = _errors(text)
    assert "hosts[0].name:" in errors
    assert "hosts[1].role:" in errors
    assert "ports.api:" in _errors(GOOD + "ports: {api: 70000}\n")
    assert "extra" in _errors(GOOD + "colour: blue\n").lower()
    assert "hosts[0].host_volumes:" in _errors(GOOD.replace("/srv/data", "srv/data"))


def test_server_hosts_are_one_three_or_five() -> None:
    two = GOOD.replace("role: agent", "role: server")
    assert "2 server hosts" in _errors(two)
    none = GOOD.replace("role: both", "role: agent")
    assert "0 server hosts" in _errors(none)


def test_names_and_advertise_addresses_are_unique() -> None:
    errors = _errors(GOOD.replace("name: a1", "name: s1").replace("198.18.0.12", "198.18.0.11"))
    assert "hosts[1].name: 's1' is also hosts[0]" in errors
    assert "hosts[1].advertise: 198.18.0.11 is also hosts[0]'s" in errors


def test_not_yaml_and_not_a_mapping() -> None:
    assert "not YAML" in _errors("cluster: [")
    assert "expected a mapping" in _errors("- a\n- b\n")


def test_field_path() -> None:
    assert field_path(("hosts", 2, "advertise")) == "hosts[2].advertise"
    assert field_path(("ssh", "port")) == "ssh.port"
    assert field_path(()) == "(the file)"
