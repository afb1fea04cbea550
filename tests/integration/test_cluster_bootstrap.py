"""``theseus cluster bootstrap|status|teardown`` end to end, over real SSH: two sshd processes
on loopback addresses are the hosts (one ``both``, one ``agent``), each with its own install
prefix under the test's directory and this machine's Docker Engine.

An unknown host key stops the run, naming its fingerprint, before anything changes; accepted,
the cluster comes up and the CLI's new context sees two ready nodes that run a task; a second
run changes nothing; an agent option (``agent:``) given to one host restarts that agent alone,
which registers with it while its task runs on; status shows both hosts; teardown leaves no
process, container or file. The durations of the runs are printed (``-s`` shows them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.kit.sshd import Sshd, client_key, start_sshd
from tests.kit.wait import wait_until
from tests.kit.workloads import LOOPING
from theseus.cluster.ports import free_port

pytestmark = pytest.mark.integration

HOSTS = {"s1": "127.1.0.11", "a1": "127.1.0.12"}


class Cli:
    def __init__(self, config: Path) -> None:
        self.env = {**os.environ, "THESEUS_CONFIG": str(config)}
        for name in ("THESEUS_SERVER", "THESEUS_TOKEN", "THESEUS_CA_CERT", "THESEUS_CONTEXT"):
            self.env.pop(name, None)

    def __call__(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "theseus", *args],
            capture_output=True,
            text=True,
            env={**self.env, "COLUMNS": "200"},
            timeout=300,
        )
        if expect is not None:
            assert result.returncode == expect, f"{args}: {result.stdout}\n{result.stderr}"
        return result


def _our_processes(root: Path) -> list[int]:
    """PIDs of processes started from under ``root`` (the hosts' prefixes): ours only."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"{root}/" in cmdline and "sshd" not in cmdline:
            found.append(int(entry.name))
    return found


def _logs(root: Path) -> str:
    """The hosts' service logs' tails, to see why something failed."""
    text = ""
    for log in sorted(root.glob("*/var/log/theseus/*.log")):
        text += f"\n--- {log.relative_to(root)}\n" + "\n".join(log.read_text().splitlines()[-15:])
    return text


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """The hosts' prefixes: short, as an agent's unix socket path is at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="ths-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hosts(tmp_path: Path, short_dir: Path) -> Iterator[tuple[Path, dict[str, Sshd]]]:
    key = client_key(tmp_path / "client")
    port = free_port()
    sshds: dict[str, Sshd] = {}
    try:
        for name, address in HOSTS.items():
            sshds[name] = start_sshd(tmp_path / name, address, port, Path(f"{key}.pub"))
        api, agent, etcd_client, etcd_peer = (free_port() for _ in range(4))
        document = {
            "cluster": f"t{os.getpid()}",
            "ssh": {"user": "root", "port": port, "key": "client/id_ed25519"},
            "ports": {
                "api": api,
                "agent": agent,
                "etcd_client": etcd_client,
                "etcd_peer": etcd_peer,
            },
            "install": {"docker_host": "unix:///var/run/docker.sock"},
            # Longer than an agent's restart on a loaded machine: the restart below must not
            # have its node declared lost and its task replaced.
            "server": {"liveness_timeout": 15},
            "hosts": [
                {
                    "name": "s1",
                    "advertise": HOSTS["s1"],
                    "role": "both",
                    "attributes": {"zone": "a"},
                    "install": {"prefix": str(short_dir / "s1")},
                    "ssh": {"known_hosts": "known_hosts"},
                },
                {
                    "name": "a1",
                    "advertise": HOSTS["a1"],
                    "role": "agent",
                    "install": {"prefix": str(short_dir / "a1")},
                    "ssh": {"known_hosts": "known_hosts"},
                },
            ],
        }
        path = tmp_path / "hosts.yaml"
        path.write_text(json.dumps(document))  # JSON is YAML
        yield path, sshds
    finally:
        for pid in _our_processes(short_dir):  # whatever a failed test left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        for sshd in sshds.values():
            sshd.stop()


def test_bootstrap_rerun_status_teardown(
    hosts: tuple[Path, dict[str, Sshd]],
    tmp_path: Path,
    short_dir: Path,
    busybox_image: str,
    docker_client: docker.DockerClient,
    request: pytest.FixtureRequest,
) -> None:
    path, sshds = hosts
    cli = Cli(tmp_path / "config.json")
    state = tmp_path / "state"
    wheelhouse = request.config.cache.mkdir("theseus-wheelhouse")  # built once, reused
    common = ("-f", str(path), "--state-dir", str(state))
    bootstrap = ("cluster", "bootstrap", *common, "--wheelhouse-dir", str(wheelhouse))

    # An unknown host key: nothing changes, the fingerprints are printed.
    refused = cli(*bootstrap, expect=1)
    for name, sshd in sshds.items():
        assert f"--accept-host-key {name}={sshd.fingerprint}" in refused.stderr
    assert list(short_dir.iterdir()) == []

    accept = [f"--accept-host-key={n}={s.fingerprint}" for n, s in sshds.items()]
    started = time.monotonic()
    try:
        done = cli(*bootstrap, *accept)
        first = time.monotonic() - started
        print(done.stdout)  # the table of steps and their durations (pytest -s)
        assert "is up" in done.stdout
        nodes = cli("nodes", "--json")
        ready = {n["name"] for n in json.loads(nodes.stdout) if n["status"] == "ready"}
        assert ready == {"s1", "a1"}
        # No secret in what it printed; the agents' environment files hold no token now.
        admin = (state / "pki" / "admin.token").read_text().strip()
        assert admin not in done.stdout + done.stderr
        for name in HOSTS:
            env = (short_dir / name / "etc" / "theseus" / "agent.env").read_text()
            assert "THESEUS_JOIN_TOKEN" not in env

        spec = {**LOOPING, "instances": 2}
        (tmp_path / "app.json").write_text(json.dumps({"deploy": {"boot": spec}}))
        deployed = cli("deploy", "--timeout", "60", "-f", str(tmp_path / "app.json"), expect=None)
        assert deployed.returncode == 0, (
            deployed.stdout + deployed.stderr + cli("ps").stdout + _logs(short_dir)
        )

        def running() -> set[str] | None:
            rows = json.loads(cli("ps", "--json").stdout)
            nodes = {r["node"] for r in rows if r["state"] == "running"}
            return nodes if len(nodes) == 2 else None

        assert wait_until(running, 60, "a task running on each host") == {"s1", "a1"}

        # Again: every step finds its work done.
        started = time.monotonic()
        again = cli(*bootstrap)
        rerun = time.monotonic() - started
        assert "(0 steps changed something)" in again.stdout, again.stdout
        dry = cli(*bootstrap, "--dry-run").stdout
        assert dry.count(" ok ") == 16 and " change " not in dry, dry

        # An agent option given to a1 only: a1's agent alone restarts, registers with it,
        # and its task runs on (KillMode=process, or the supervisor's --only-main-process).
        document = json.loads(path.read_text())
        document["hosts"][1]["agent"] = {"cpus": 3, "allow_caps": ["cap_net_admin"]}
        path.write_text(json.dumps(document))
        started = time.monotonic()
        changed = cli(*bootstrap)
        option_rerun = time.monotonic() - started
        assert "(1 steps changed something)" in changed.stdout, changed.stdout

        def a1_with_options() -> dict[str, Any] | None:
            listed = {n["name"]: n for n in json.loads(cli("nodes", "--json").stdout)}
            node: dict[str, Any] = listed["a1"]
            return node if node["status"] == "ready" and node["cpus"] == 3 else None

        a1 = wait_until(a1_with_options, 30, "a1 registered again with --cpus 3")
        assert a1["gates"]["allow_caps"] == ["NET_ADMIN"]
        s1 = next(n for n in json.loads(cli("nodes", "--json").stdout) if n["name"] == "s1")
        assert s1["gates"]["allow_caps"] == [] and s1["cpus"] != 3
        assert wait_until(running, 60, "the tasks still running on each host") == {"s1", "a1"}
        print(cli("ps", "-a").stdout)

        status = cli("cluster", "status", *common).stdout
        for name in HOSTS:
            assert name in status
        assert status.count("running") >= 4  # etcd, server, agent on s1; agent on a1
        assert "ready" in status
        cluster_id = json.loads((state / "cluster.json").read_text())["cluster_id"]
        assert cluster_id
    finally:
        started = time.monotonic()
        removed = cli("cluster", "teardown", *common, "--yes", expect=None)
        teardown = time.monotonic() - started
    assert removed.returncode == 0, removed.stdout + removed.stderr
    print(
        f"\nbootstrap of 2 hosts {first:.1f}s, re-run {rerun:.1f}s, re-run with an agent "
        f"option {option_rerun:.1f}s, teardown {teardown:.1f}s"
    )

    assert _our_processes(short_dir) == []
    left = docker_client.containers.list(
        all=True, filters={"label": f"theseus.cluster={cluster_id}"}
    )
    assert left == []
    assert list(short_dir.iterdir()) == []  # the prefixes themselves removed
    assert not state.exists()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["contexts"] == {} and config["current"] is None
