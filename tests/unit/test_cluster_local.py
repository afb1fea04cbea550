"""`theseus up` / `down` paths that need no etcd, server or agent."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from theseus.api.client import ServerClient
from theseus.cli.main import app
from theseus.cluster import local, statefile
from theseus.cluster.commands import ClusterConfig


def test_up_without_etcd_is_a_clear_error(tmp_path: Path) -> None:
    config = ClusterConfig(state_dir=tmp_path, etcd_binary="no-such-etcd-binary", port=1)
    with pytest.raises(local.ClusterError, match="not found on PATH"):
        local.up(config, lambda _: None)
    assert statefile.load(tmp_path) is None


def test_down_when_nothing_runs(tmp_path: Path) -> None:
    said: list[str] = []
    local.down(tmp_path / "never-used", purge=True, report=said.append)
    assert said == [f"no cluster recorded in {tmp_path / 'never-used'}; nothing to stop"]


def test_down_skips_processes_that_are_not_ours(tmp_path: Path) -> None:
    record = statefile.ClusterRecord(
        state_dir=str(tmp_path),
        api_url="http://127.0.0.1:1",
        etcd_endpoint="127.0.0.1:2",
        port=1,
        etcd_port=2,
        driver="sim",
        processes=[
            statefile.ProcessRecord(
                name="server", role="server", pid=1, command=["not", "pid", "1"], log="x"
            )
        ],
    )
    statefile.save(tmp_path, record)
    said: list[str] = []
    local.down(tmp_path, purge=True, report=said.append)
    assert "server: not running" in said
    assert not tmp_path.exists()


def test_purge_refuses_a_directory_that_is_not_a_state_dir(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("keep me")
    with pytest.raises(local.ClusterError, match="does not look like"):
        local.down(tmp_path, purge=True, report=lambda _: None)
    assert (tmp_path / "precious").exists()


def test_down_command_is_safe_when_nothing_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["down", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 0
    assert "nothing to stop" in result.stdout


def test_up_with_a_bad_attribute_names_the_option_and_starts_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = CliRunner().invoke(app, ["up", "--state-dir", str(state), "--attr", "rack"])
    assert result.exit_code == 2
    assert "--attr" in result.output and "'rack' is not KEY=VALUE" in result.output
    assert not state.exists()


def test_up_waits_for_the_attributes_it_gave_not_a_stale_ready_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Right after `down`, a node's record still reads as ready (its liveness lease has not
    run out yet) with its old attributes; `up` must not take it for the new agent."""
    attributes = {"node-1": {"rack": "r1"}, "node-2": {}}

    def nodes(request: httpx.Request) -> httpx.Response:
        listed = [node("node-1", {}), node("node-2", {})]  # node-1: the stale record
        return httpx.Response(200, json={"nodes": listed})

    transport = httpx.MockTransport(nodes)
    monkeypatch.setattr(
        local, "_client", lambda url, _access: ServerClient(url, transport=transport)
    )
    assert [n.name for n in local.ready_nodes("http://s", {"node-1", "node-2"}, attributes)] == [
        "node-2"
    ]
    assert len(local.ready_nodes("http://s", {"node-1", "node-2"})) == 2


def node(name: str, attributes: dict[str, str]) -> dict[str, object]:
    return {
        "name": name,
        "address": "127.0.0.2",
        "agent_port": 5051,
        "status": "ready",
        "driver": "docker",
        "cpus": 2,
        "mem": 1024,
        "used_cpus": 0,
        "used_mem": 0,
        "tasks": 0,
        "port_range": [31000, 32000],
        "attributes": attributes,
        "registered_at": 1.0,
    }
