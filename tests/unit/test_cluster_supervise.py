"""``theseus.cluster.supervise`` with real child processes (small Python scripts): logs, stop
by PID with a grace period, restart, health waits that fail early, stopping in role order."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from theseus.cluster.procs import cmdline
from theseus.cluster.supervise import (
    Process,
    Processes,
    ProcessExited,
    environ_without_proxies,
)
from theseus.cluster.waiting import wait_until

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"
# Ignores SIGTERM, once it has said so.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring', flush=True); time.sleep(60)"
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def logged(process: Process, text: str) -> None:
    wait_until(lambda: text in process.tail(), 10, f"{text!r} in {process.name}'s log", 0.01)


def test_start_log_stop_and_restart(tmp_path: Path) -> None:
    processes = Processes(tmp_path / "logs")
    first = processes.start("sleeper", python(SLEEPER), role="agent")
    try:
        logged(first, "up")
        assert first.alive() and first.returncode is None
        assert first.stop() == "stopped"
        assert first.returncode == -signal.SIGTERM and not first.failed()
        second = processes.restart("sleeper")
        assert processes["sleeper"] is second and second.pid != first.pid
        assert (second.argv, second.log, second.role) == (first.argv, first.log, "agent")
        wait_until(lambda: second.tail().count("up") == 2, 10, "the restart in the same log")
    finally:
        processes.stop_all()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    process = Process.start("stubborn", python(STUBBORN), tmp_path / "stubborn.log")
    try:
        logged(process, "ignoring")
        assert process.stop(grace=0.3) == "killed (did not stop within 0 s)"
        assert process.returncode == -signal.SIGKILL
        assert process.stop() == "not running"
    finally:
        process.popen.kill()
        process.popen.wait()


def test_waiting_for_health_fails_at_once_when_the_process_exits(tmp_path: Path) -> None:
    process = Process.start(
        "crash", python("print('no etcd'); raise SystemExit(3)"), tmp_path / "c"
    )
    with pytest.raises(ProcessExited) as caught:
        process.wait_healthy(lambda: False, 30, "crash to answer")
    assert caught.value.code == 3 and caught.value.name == "crash"
    assert "exited with code 3 while waiting for crash to answer" in str(caught.value)
    assert "no etcd" in str(caught.value)  # the log's tail comes along


def test_a_second_start_under_a_running_name_is_refused(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    processes.start("one", python(SLEEPER))
    try:
        with pytest.raises(RuntimeError, match="still runs"):
            processes.start("one", python(SLEEPER))
        with pytest.raises(RuntimeError, match="still runs"):
            processes.restart("one")
    finally:
        processes.stop_all()


def test_check_alive_names_an_unexpected_exit_only(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    try:
        helper = processes.start("helper", python("pass"), may_exit=True)
        processes.start("stopped", python(SLEEPER)).stop()
        wait_until(lambda: not helper.alive(), 10, "the helper done")
        processes.check_alive()  # neither exit is a failure
        processes.start("broken", python("raise SystemExit(2)"))
        with pytest.raises(ProcessExited, match="broken exited with code 2 while waiting for it"):
            processes.wait_until(lambda: False, 30, "it")
    finally:
        processes.stop_all()  # none may outlive the test (pytest turns that warning into an error)


def test_stop_all_stops_agents_then_servers_then_etcd(tmp_path: Path) -> None:
    order = tmp_path / "order"
    # Each says when it got SIGTERM, and takes a moment to exit.
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        f"    open({str(order)!r}, 'a').write(sys.argv[1] + '\\n'); time.sleep(0.2); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    processes = Processes(tmp_path / "logs")
    for name, role in (("etcd", "etcd"), ("server", "server"), ("a-1", "agent"), ("a-2", "agent")):
        logged(processes.start(name, [*python(code), name], role=role), "up")  # type: ignore[arg-type]
    outcome = processes.stop_all()
    assert outcome == {"a-2": "stopped", "a-1": "stopped", "server": "stopped", "etcd": "stopped"}
    lines = order.read_text().split()
    assert sorted(lines[:2]) == ["a-1", "a-2"] and lines[2:] == ["server", "etcd"]


def test_a_child_can_die_with_its_parent(tmp_path: Path) -> None:
    """The benchmarks' children: their parent killed, they get SIGTERM from the kernel."""
    parent = (
        "import sys; from pathlib import Path\n"
        "from theseus.cluster.supervise import SpawnOptions, spawn\n"
        f"child = spawn(['sleep', '60'], Path({str(tmp_path / 'child.log')!r}), "
        "SpawnOptions(die_with_parent=True))\n"
        "print(child.pid, flush=True)\n"
    )
    out = subprocess.run(python(parent), capture_output=True, text=True, timeout=30, check=True)
    child = int(out.stdout)
    wait_until(lambda: cmdline(child) is None, 10, "the orphan gone")


def test_children_can_run_without_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("no_proxy", "localhost")
    env = environ_without_proxies()
    assert "HTTPS_PROXY" not in env and "no_proxy" not in env and env["PATH"]
