"""The cluster record (`STATE/cluster.json`) and the process helpers that use it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from theseus.cluster import procs, statefile
from theseus.cluster.statefile import ClusterRecord, ProcessRecord, StateFileError
from theseus.cluster.supervise import SpawnOptions, spawn
from theseus.cluster.waiting import wait_until


def make_record(state_dir: Path) -> ClusterRecord:
    return ClusterRecord(
        state_dir=str(state_dir),
        api_url="http://127.0.0.1:15000",
        etcd_endpoint="127.0.0.1:12379",
        port=15000,
        etcd_port=12379,
        cluster_id="c0ffee",
        processes=[
            ProcessRecord(name="etcd", role="etcd", pid=10, command=["etcd"], log="/l/etcd.log"),
            ProcessRecord(
                name="node-1",
                role="agent",
                pid=12,
                command=["py", "-m", "theseus", "agent"],
                log="/l/node-1.log",
                address="127.0.0.2",
            ),
        ],
    )


def test_round_trip(tmp_path: Path) -> None:
    record = make_record(tmp_path)
    statefile.save(tmp_path, record)
    assert statefile.load(tmp_path) == record
    assert statefile.is_state_dir(tmp_path)
    assert [p.name for p in record.by_role("agent")] == ["node-1"]


def test_missing_file_is_no_cluster(tmp_path: Path) -> None:
    assert statefile.load(tmp_path) is None
    assert not statefile.is_state_dir(tmp_path)


def test_clear_keeps_the_marker(tmp_path: Path) -> None:
    statefile.save(tmp_path, make_record(tmp_path))
    statefile.clear(tmp_path)
    assert statefile.load(tmp_path) is None
    assert statefile.is_state_dir(tmp_path)  # `down --purge` may still delete it


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    statefile.state_file(tmp_path).write_text("{not json")
    with pytest.raises(StateFileError, match=r"cluster\.json"):
        statefile.load(tmp_path)


def test_is_ours_checks_the_command_line() -> None:
    me = procs.cmdline(os.getpid())
    assert me is not None
    ours = ProcessRecord(name="me", role="server", pid=os.getpid(), command=me, log="x")
    assert procs.is_ours(ours)
    stranger = ours.model_copy(update={"command": ["something", "else"]})
    assert not procs.is_ours(stranger)
    gone = ours.model_copy(update={"pid": 2**22 + 1})
    assert not procs.is_ours(gone)


def test_spawn_and_stop(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; print('hi', flush=True); time.sleep(60)"]
    options = SpawnOptions(cwd=tmp_path, detached=True)  # as `theseus up` starts them
    popen = spawn(command, tmp_path / "logs" / "sleeper.log", options)
    record = ProcessRecord(name="sleeper", role="agent", pid=popen.pid, command=command, log="x")
    try:
        # Popen returns once exec has begun, but the kernel fills in the new argv a moment
        # later: /proc/<pid>/cmdline can read empty for a short while under load.
        wait_until(lambda: procs.is_ours(record), 5, "its argv in /proc", interval=0.01)
        assert os.getsid(popen.pid) == popen.pid  # detached into its own session
        assert procs.stop([record], grace=5) == {"sleeper": "stopped"}
        popen.wait(timeout=5)
        assert procs.stop([record], grace=5) == {"sleeper": "not running"}
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
