"""Each host's own Docker Engine: its command line (pure), starting it inside the host's
namespace, waiting until it answers, and removing what it leaves (containers, mounts, cgroups).

Called by ``tests.testbed.up`` and ``tests.testbed.down``. One engine per host, with its own
data root, exec root, socket, pid file, daemon.json, bridge subnet (``--bip``) and address pool
(so nothing it makes is in a private range), and ``--cgroup-parent``: every container of host
h1 lives in cgroups under ``/ths-tb-h1``, where ``down`` finds them even when their engine
died without stopping them. The engine runs its own containerd (under its exec root), also in
the namespace. Its iptables rules (port publishing) are the namespace's own.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path

import docker

from tests.testbed import processes
from tests.testbed.network import mount_points
from tests.testbed.plan import HostPlan
from tests.testbed.state import ProcessEntry
from theseus.cluster.waiting import wait_until

CGROUP_ROOT = Path("/sys/fs/cgroup")
ENGINE_START_TIMEOUT = 60.0  # ~8 s alone; 3 at once on 2 cores take longer


class EngineError(RuntimeError):
    pass


def dockerd_argv(host: HostPlan) -> list[str]:
    paths = host.paths
    return [
        "dockerd",
        f"--config-file={paths.docker_config}",
        f"--data-root={paths.docker_data}",
        f"--exec-root={paths.docker_exec}",
        f"--host={host.docker_host}",
        f"--pidfile={paths.docker_pidfile}",
        f"--bip={host.docker_bip}",
        f"--default-address-pool=base={host.docker_pool},size=24",
        f"--cgroup-parent={host.cgroup_parent}",
        "--log-level=warn",
    ]


def start_engine(host: HostPlan) -> ProcessEntry:
    paths = host.paths
    for directory in (paths.docker_data, paths.docker_exec):
        directory.mkdir(parents=True, exist_ok=True)
    paths.docker_config.write_text("{}\n")
    # A pid file left by an engine that was killed makes dockerd refuse to start; one left by
    # its containerd makes dockerd wait for whatever process has that pid now, if any.
    paths.docker_pidfile.unlink(missing_ok=True)
    (paths.docker_exec / "containerd" / "containerd.pid").unlink(missing_ok=True)
    return processes.start(
        f"dockerd-{host.name}", "dockerd", host.netns, dockerd_argv(host), paths.docker_log
    )


def client(host: HostPlan, timeout: float = 30.0) -> docker.DockerClient:
    return docker.DockerClient(base_url=host.docker_host, timeout=int(timeout))


def _accepts(socket_path: Path) -> bool:
    """Something accepts connections on the unix socket. Asked first because the Docker SDK
    leaks its socket when the connect is refused (a killed engine leaves its socket file)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(socket_path))
        except OSError:
            return False
    return True


def answers(host: HostPlan) -> bool:
    if not _accepts(host.paths.docker_socket):
        return False
    try:
        with contextlib.closing(client(host, timeout=2)) as engine:
            return bool(engine.ping())
    except docker.errors.DockerException:
        return False


def wait_engine(host: HostPlan, entry: ProcessEntry, timeout: float = ENGINE_START_TIMEOUT) -> None:
    def ready() -> bool:
        if not processes.alive(entry):
            raise EngineError(
                f"the engine of {host.name} exited; last lines of {entry.log}:\n"
                + _tail(Path(entry.log))
            )
        return answers(host)

    wait_until(ready, timeout, f"the Docker Engine of {host.name} to answer", interval=0.2)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def remove_containers(host: HostPlan) -> int:
    """Every container of this engine, removed with its anonymous volumes; how many. Nothing
    when the engine does not answer (``down`` then finds their processes by cgroup)."""
    if not answers(host):
        return 0
    with contextlib.closing(client(host, timeout=60)) as engine:
        containers = engine.containers.list(all=True)
        for container in containers:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        return len(containers)


def _cgroup_dirs(cgroup_parent: str) -> list[Path]:
    """The parent's directory in every mounted hierarchy (cgroup v1: one per controller)."""
    relative = cgroup_parent.strip("/")
    found = [CGROUP_ROOT / relative] if (CGROUP_ROOT / relative).is_dir() else []
    if CGROUP_ROOT.is_dir():
        for hierarchy in CGROUP_ROOT.iterdir():
            candidate = hierarchy / relative
            with contextlib.suppress(OSError):
                if candidate.is_dir():
                    found.append(candidate)
    return found


def cgroup_pids(cgroup_parent: str) -> set[int]:
    """Every process in the cgroups under ``cgroup_parent``: the engine's containers."""
    pids: set[int] = set()
    for top in _cgroup_dirs(cgroup_parent):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroups(cgroup_parent: str) -> list[str]:
    """rmdir every (empty) cgroup under the parent, deepest first; what could not go."""
    left = []
    for top in _cgroup_dirs(cgroup_parent):
        dirs = sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts))
        for directory in [*dirs, top]:
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                left.append(f"{directory}: {exc.strerror}")
    return left


def mounts_under(root: Path) -> list[str]:
    """Mount points at or under ``root``, deepest first (the order to unmount them in)."""
    prefix = str(root).rstrip("/") + "/"
    found = [p for p in mount_points() if p == str(root) or p.startswith(prefix)]
    return sorted(set(found), key=lambda p: -p.count("/"))


def unmount_under(root: Path) -> list[str]:
    """Unmount what an engine left mounted under its roots (a killed engine leaves its
    containers' overlays and its network namespaces' bind mounts); what could not go."""
    left = []
    for point in mounts_under(root):
        result = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            # Busy (a process still holds it): detach it, the kernel frees it when released.
            lazy = subprocess.run(["umount", "-l", point], capture_output=True, text=True)
            if lazy.returncode != 0:
                left.append(f"{point}: {lazy.stderr.strip()}")
    return left
