"""`theseus up` / `down` paths that need no etcd, server or agent."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

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
