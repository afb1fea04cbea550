"""The test bed's plan (``tests/testbed/plan.py``) and the pure parts built on it: every
address in 198.18.0.0/15 and distinct, the names of docs/machines.md, the engines' and sshds'
configuration, the hosts file."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from tests.testbed.engines import dockerd_argv
from tests.testbed.hostsfile import hosts_document
from tests.testbed.network import bridge_rules
from tests.testbed.plan import MAX_HOSTS, TESTBED_RANGE, PlanError, addresses, make_plan
from tests.testbed.sshd import known_hosts_line, sshd_config
from theseus.provision.hosts import parse
from theseus.provision.services import agent_service

WORKDIR = Path("/repo/.testbed")
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


@pytest.mark.parametrize("hosts", [1, 3, MAX_HOSTS])
def test_every_address_is_in_the_test_range_and_none_overlap(hosts: int) -> None:
    plan = make_plan(WORKDIR, hosts)
    networks = [ipaddress.ip_network(a, strict=False) for _, a in addresses(plan)]
    for network in networks:
        assert network.subnet_of(TESTBED_RANGE)  # type: ignore[arg-type]
        assert not any(network.overlaps(p) for p in PRIVATE)
    engine_networks = [n for n in networks if n.prefixlen < 32 and str(n).startswith("198.19")]
    for i, a in enumerate(engine_networks):
        for b in engine_networks[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    singles = [plan.registry.address, plan.bridge_cidr.split("/")[0]]
    singles += [h.address for h in plan.hosts]
    assert len(set(singles)) == len(singles)


def test_the_addresses_and_names_of_docs_machines_md() -> None:
    plan = make_plan(WORKDIR, 3)
    assert plan.bridge == "thstb0" and plan.bridge_cidr == "198.18.0.1/24"
    assert plan.registry.host == "198.18.0.2:5000"
    assert plan.registry.netns == "ths-tb-registry"
    assert [(h.name, h.netns, h.address, h.role) for h in plan.hosts] == [
        ("h1", "ths-tb-h1", "198.18.0.11", "both"),
        ("h2", "ths-tb-h2", "198.18.0.12", "agent"),
        ("h3", "ths-tb-h3", "198.18.0.13", "agent"),
    ]
    assert [h.docker_bip for h in plan.hosts] == [f"198.19.{i}.1/24" for i in (1, 2, 3)]
    assert all(len(h.veth) <= 15 for h in plan.hosts)  # an interface name's limit
    assert len(plan.registry.veth) <= 15


@pytest.mark.parametrize("hosts", [0, -1, MAX_HOSTS + 1])
def test_a_number_of_hosts_out_of_range_is_refused_naming_the_flag(hosts: int) -> None:
    with pytest.raises(PlanError, match="--hosts"):
        make_plan(WORKDIR, hosts)


def test_a_work_directory_too_deep_for_a_unix_socket_is_refused() -> None:
    with pytest.raises(PlanError, match="too deep"):
        make_plan(Path("/" + "d" * 100), 1)


def test_a_relative_work_directory_is_refused() -> None:
    with pytest.raises(PlanError, match="absolute"):
        make_plan(Path(".testbed"), 1)


def test_each_engine_has_its_own_roots_socket_network_and_cgroup() -> None:
    plan = make_plan(WORKDIR, 2)
    argvs = [dockerd_argv(h) for h in plan.hosts]
    for flag in ("--data-root", "--exec-root", "--host", "--pidfile", "--bip", "--cgroup-parent"):
        values = [next(a for a in argv if a.startswith(flag + "=")) for argv in argvs]
        assert len(set(values)) == 2, flag
    assert f"--config-file={plan.hosts[0].paths.docker_config}" in argvs[0]
    assert "--default-address-pool=base=198.19.128.0/21,size=24" in argvs[0]
    assert "--default-address-pool=base=198.19.136.0/21,size=24" in argvs[1]


def test_sshd_listens_on_its_address_only_and_takes_keys_only() -> None:
    plan = make_plan(WORKDIR, 2)
    host = plan.hosts[1]
    lines = sshd_config(host, plan.authorized_keys).splitlines()
    assert "ListenAddress 198.18.0.12:22" in lines
    assert sum(line.startswith("ListenAddress") for line in lines) == 1
    for line in (
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        f"PidFile {host.paths.sshd_pidfile}",
        f"HostKey {host.paths.sshd_host_key}",
        f"AuthorizedKeysFile {plan.authorized_keys}",
    ):
        assert line in lines
    line = known_hosts_line(host, "ssh-ed25519 AAAAkey root@h2")
    assert line == "198.18.0.12 ssh-ed25519 AAAAkey"


def test_the_hosts_file_follows_docs_machines_md() -> None:
    plan = make_plan(WORKDIR, 3)
    document = hosts_document(plan)
    assert document["cluster"] == "testbed"
    assert document["ssh"] == {
        "user": "root",
        "port": 22,
        "key": "ssh/id_ed25519",
        "known_hosts": "known_hosts",
    }
    first = document["hosts"][0]
    assert first == {
        "name": "h1",
        "address": "198.18.0.11",
        "advertise": "198.18.0.11",
        "role": "both",
        "attributes": {"host": "h1"},
        "install": {
            "prefix": "/repo/.testbed/hosts/h1/root",
            "docker_host": "unix:///repo/.testbed/hosts/h1/docker/docker.sock",
        },
    }
    assert [h["role"] for h in document["hosts"]] == ["both", "agent", "agent"]
    # No host has local images: the pods' network container comes from the bed's registry.
    assert document["agent"] == {
        "pod_infra_image": "198.18.0.2:5000/theseus/busybox:latest",
        "registry_login_cache": 0,
    }


def test_the_hosts_file_is_one_theseus_cluster_reads() -> None:
    plan = make_plan(WORKDIR, 3)
    hosts = parse(yaml.safe_dump(hosts_document(plan)), plan.hosts_file)
    assert [h.name for h in hosts.agents] == ["h1", "h2", "h3"]
    for host in hosts.agents:
        argv = agent_service(hosts, host).argv
        image = argv[argv.index("--pod-infra-image") + 1]
        assert image == "198.18.0.2:5000/theseus/busybox:latest"


def test_the_bridge_rules_let_the_bed_talk_within_and_nothing_in() -> None:
    accept, drop = bridge_rules("thstb0")
    assert accept[:5] == ["FORWARD", "-i", "thstb0", "-o", "thstb0"]
    assert accept[-2:] == ["-j", "ACCEPT"]
    assert drop[:6] == ["FORWARD", "!", "-i", "thstb0", "-o", "thstb0"]
    assert drop[-2:] == ["-j", "DROP"]
