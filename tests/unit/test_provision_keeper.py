"""The supervisor of a service on a host without systemd (``theseus.provision.keeper``), as
real processes: it restarts a failing child after 2 s, reads the environment file, and on
SIGTERM stops its child — for the agent (``--only-main-process``) only the main process, so
that what it started lives on — then exits, its pid files removed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit.wait import wait_until
from theseus.provision.keeper import read_env_file


def _keeper(tmp_path: Path, script: str, *flags: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "theseus.provision.keeper", "--name", "t"]
    argv += ["--pidfile", str(tmp_path / "t.pid"), "--child-pidfile", str(tmp_path / "c.pid")]
    argv += ["--log", str(tmp_path / "t.log"), "--env-file", str(tmp_path / "t.env"), *flags]
    return subprocess.Popen([*argv, "--", "sh", "-c", script], cwd=tmp_path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_env_file_lines() -> None:
    assert read_env_file(Path("/nonexistent")) == {}


def test_env_file_parsing(tmp_path: Path) -> None:
    path = tmp_path / "e.env"
    path.write_text("# comment\n\nA=1\nB='two words'\nC=\"x=y\"\nnot a line\n")
    assert read_env_file(path) == {"A": "1", "B": "two words", "C": "x=y"}


def test_a_failing_child_is_restarted_and_sees_the_env_file(tmp_path: Path) -> None:
    (tmp_path / "t.env").write_text("GREETING=hello\n")
    keeper = _keeper(tmp_path, 'echo "$GREETING" >> runs; exit 3')
    try:
        wait_until(
            lambda: (
                (tmp_path / "runs").is_file()
                and (tmp_path / "runs").read_text().count("hello") >= 2
            ),
            10,
            "a second run, 2 s after the first failed",
        )
        assert "exited with 3; restarting in 2 s" in (tmp_path / "t.log").read_text()
    finally:
        keeper.send_signal(signal.SIGTERM)
        assert keeper.wait(10) == 0
    assert not (tmp_path / "t.pid").exists() and not (tmp_path / "c.pid").exists()


@pytest.mark.parametrize("only_main", [True, False])
def test_sigterm_stops_the_child_and_for_the_agent_only_the_main_process(
    tmp_path: Path, only_main: bool
) -> None:
    flags = ("--only-main-process",) if only_main else ()
    keeper = _keeper(tmp_path, "sleep 300 & echo $! > task; wait", *flags)
    task = 0
    try:
        wait_until(
            lambda: (tmp_path / "task").is_file() and (tmp_path / "c.pid").is_file(),
            10,
            "the child and its task started",
        )
        task = int(wait_until(lambda: (tmp_path / "task").read_text().strip(), 5, "its pid"))
        child = int((tmp_path / "c.pid").read_text())
        assert int((tmp_path / "t.pid").read_text()) == keeper.pid
        keeper.send_signal(signal.SIGTERM)
        assert keeper.wait(10) == 0
        assert not _alive(child)
        if only_main:
            assert _alive(task)  # an agent restart leaves its tasks running
        else:
            wait_until(lambda: not _alive(task), 5, "the whole group stopped")
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()
        if task and _alive(task):
            os.kill(task, signal.SIGKILL)
