"""`theseus up --ha`: the command lines of several etcd members and servers, and the record."""

from __future__ import annotations

from pathlib import Path

from theseus.cluster import statefile
from theseus.cluster.commands import ClusterConfig, agent_command, etcd_command, server_command
from theseus.cluster.statefile import ClusterRecord

STATE = Path("/state")
HA = ClusterConfig(state_dir=STATE, port=15000, etcd_port=12379, python="/py", servers=2,
                   etcd_members=3)  # fmt: skip


def option(command: list[str], name: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == name]


def test_members_and_servers_get_consecutive_ports() -> None:
    assert HA.etcd_ports == [12379, 12381, 12383]
    assert HA.etcd_endpoints == ["127.0.0.1:12379", "127.0.0.1:12381", "127.0.0.1:12383"]
    assert HA.api_urls == ["http://127.0.0.1:15000", "http://127.0.0.1:15001"]
    assert [HA.etcd_name(m) for m in (1, 2, 3)] == ["etcd-1", "etcd-2", "etcd-3"]
    assert [HA.server_name(i) for i in (1, 2)] == ["server-1", "server-2"]


def test_each_member_knows_the_whole_cluster_and_keeps_its_own_data() -> None:
    command = etcd_command(HA, 2)
    assert option(command, "--name") == ["etcd-2"]
    assert option(command, "--data-dir") == ["/state/etcd/cluster-of-3/etcd-2"]
    assert option(command, "--listen-client-urls") == ["http://127.0.0.1:12381"]
    assert option(command, "--listen-peer-urls") == ["http://127.0.0.1:12382"]
    assert option(command, "--initial-cluster") == [
        "etcd-1=http://127.0.0.1:12380,etcd-2=http://127.0.0.1:12382,etcd-3=http://127.0.0.1:12384"
    ]
    assert option(command, "--initial-cluster-state") == ["new"]


def test_each_server_gets_every_member_its_own_first() -> None:
    first, second = server_command(HA, 1), server_command(HA, 2)
    assert option(first, "--port") == ["15000"] and option(second, "--port") == ["15001"]
    assert option(first, "--etcd") == HA.etcd_endpoints
    assert option(second, "--etcd") == ["127.0.0.1:12381", "127.0.0.1:12383", "127.0.0.1:12379"]


def test_each_server_knows_the_others_as_its_peers() -> None:
    # Where its dashboard's tabs go when it dies.
    assert option(server_command(HA, 1), "--peer") == ["http://127.0.0.1:15001"]
    assert option(server_command(HA, 2), "--peer") == ["http://127.0.0.1:15000"]


def test_each_agent_gets_every_server_taking_turns_at_first() -> None:
    assert option(agent_command(HA, 1), "--server") == [
        "http://127.0.0.1:15000,http://127.0.0.1:15001"
    ]
    assert option(agent_command(HA, 2), "--server") == [
        "http://127.0.0.1:15001,http://127.0.0.1:15000"
    ]


def test_the_record_names_every_server_and_member(tmp_path: Path) -> None:
    record = ClusterRecord(
        state_dir=str(tmp_path),
        api_url=HA.api_url,
        etcd_endpoint=HA.etcd_endpoint,
        port=HA.port,
        etcd_port=HA.etcd_port,
        api_urls=HA.api_urls,
        etcd_endpoints=HA.etcd_endpoints,
    )
    statefile.save(tmp_path, record)
    loaded = statefile.load(tmp_path)
    assert loaded is not None
    assert loaded.server_address == "http://127.0.0.1:15000,http://127.0.0.1:15001"
    assert loaded.etcd_ports == [12379, 12381, 12383]


def test_a_record_of_one_server_reads_as_before() -> None:
    record = ClusterRecord(
        state_dir="/s", api_url="http://127.0.0.1:5000", etcd_endpoint="127.0.0.1:2379",
        port=5000, etcd_port=2379,
    )  # fmt: skip
    assert record.servers == ["http://127.0.0.1:5000"] and record.etcd_ports == [2379]


def test_a_peer_is_an_origin_or_a_usage_error_naming_it() -> None:
    import pytest
    import typer

    from theseus.cli.server_cmd import _peer_url

    assert _peer_url("https://10.0.0.12:5000/") == "https://10.0.0.12:5000"
    assert _peer_url(" http://[::1]:5001 ") == "http://[::1]:5001"
    for bad in ("10.0.0.12:5000", "ftp://a:1", "https://a:1/ui", "https://a;b:1", "https://"):
        with pytest.raises(typer.BadParameter, match="a server's URL"):
            _peer_url(bad)
