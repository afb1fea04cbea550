"""Command lines of the processes `theseus up` starts, and the default state dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from theseus.cluster.argv import AgentProcess
from theseus.cluster.commands import (
    ClusterConfig,
    agent_command,
    default_state_dir,
    etcd_command,
    node_address,
    parse_node_attributes,
    server_command,
)

STATE = Path("/state")


def test_default_state_dir_follows_xdg() -> None:
    assert default_state_dir({"XDG_STATE_HOME": "/x/state", "HOME": "/h"}) == Path(
        "/x/state/theseus"
    )
    assert default_state_dir({"HOME": "/h"}) == Path("/h/.local/state/theseus")
    # A relative XDG_STATE_HOME is invalid by the spec and ignored.
    assert default_state_dir({"XDG_STATE_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.local/state/theseus"
    )


def test_etcd_command() -> None:
    config = ClusterConfig(state_dir=STATE, etcd_port=12379)
    assert etcd_command(config) == [
        "etcd",
        "--name",
        "theseus",
        "--data-dir",
        "/state/etcd",
        "--listen-client-urls",
        "http://127.0.0.1:12379",
        "--advertise-client-urls",
        "http://127.0.0.1:12379",
        "--listen-peer-urls",
        "http://127.0.0.1:12380",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:12380",
        "--initial-cluster",
        "theseus=http://127.0.0.1:12380",
        "--pre-vote",
        "--max-txn-ops",
        "1024",
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
    ]


def test_server_command_uses_the_given_interpreter() -> None:
    config = ClusterConfig(state_dir=STATE, port=15000, etcd_port=12379, python="/py")
    assert server_command(config) == [
        "/py",
        "-m",
        "theseus",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        "15000",
        "--etcd",
        "127.0.0.1:12379",
        "--log-file",  # the file theseus up appends its output to, rotated by the server
        "/state/logs/server.log",
    ]


def test_agent_command_defaults_leave_resources_to_the_agent() -> None:
    config = ClusterConfig(state_dir=STATE, port=15000, python="/py")
    assert agent_command(config, 2) == [
        "/py",
        "-m",
        "theseus",
        "agent",
        "--server",
        "http://127.0.0.1:15000",
        "--name",
        "node-2",
        "--address",
        "127.0.0.3",
        "--port",
        "5051",
        "--log-file",
        "/state/logs/node-2.log",
        "--state-dir",
        "/state/agents/node-2",
    ]


def test_agent_command_with_driver_and_resources() -> None:
    config = ClusterConfig(state_dir=STATE, driver="sim", node_cpus=2.0, node_mem=512.5)
    command = agent_command(config, 1)
    assert command[command.index("--driver") + 1] == "sim"
    assert command[command.index("--cpus") + 1] == "2"
    assert command[command.index("--mem") + 1] == "512.5"


def test_node_addresses_are_distinct_loopback_addresses() -> None:
    assert [node_address(i) for i in (1, 2, 3)] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    with pytest.raises(ValueError):
        node_address(0)


def test_node_attributes_hand_each_keys_values_out_in_turn() -> None:
    attributes = parse_node_attributes(["rack=r1,r2", "zone=a", "rack=x,y"])
    assert attributes == (("rack", ("x", "y")), ("zone", ("a",)))  # a repeated key: the last
    config = ClusterConfig(state_dir=STATE, attributes=parse_node_attributes(["rack=r1,r2"]))
    racks = []
    for index in (1, 2, 3):
        command = agent_command(config, index)
        racks.append(command[command.index("--attr") + 1])
    assert racks == ["rack=r1", "rack=r2", "rack=r1"]
    assert "--attr" not in agent_command(ClusterConfig(state_dir=STATE), 1)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("rack", "'rack' is not KEY=VALUE"),
        ("=r1", "'=r1' is not KEY=VALUE"),
        ("rack=r1,,r2", "'rack=r1,,r2' has an empty value"),
        ("rack=", "'rack=' has an empty value"),
        ("hostname=h", "'hostname' is built in"),
    ],
)
def test_bad_node_attributes_are_refused_by_name(option: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_node_attributes([option])


def test_an_agents_gates_are_on_its_command_line() -> None:
    agent = AgentProcess(
        servers=("http://s",),
        name="n1",
        address="127.0.0.2",
        port=5051,
        state_dir=STATE / "agents" / "n1",
        host_volumes=("data=/srv/data", "logs=/var/log/app:ro"),
        allow_privileged=True,
        allow_host_namespaces=True,
        allow_caps=("NET_ADMIN",),
        python="/py",
    )
    command = agent.argv()
    tail = command[command.index("127.0.0.2") + 3 :]
    assert tail == [
        "--host-volume",
        "data=/srv/data",
        "--host-volume",
        "logs=/var/log/app:ro",
        "--allow-privileged",
        "--allow-host-namespaces",
        "--allow-cap",
        "NET_ADMIN",
        "--state-dir",
        "/state/agents/n1",
    ]


def test_theseus_up_hands_its_host_volumes_to_every_agent() -> None:
    config = ClusterConfig(state_dir=STATE, host_volumes=("data=/srv/data:ro",))
    for index in (1, 2):
        command = agent_command(config, index)
        assert command[command.index("--host-volume") + 1] == "data=/srv/data:ro"
