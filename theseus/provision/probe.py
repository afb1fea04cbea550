"""What a host is like, gathered on the host in one SSH round trip (standard library only).

``theseus.provision.facts`` sends this file's source to the host's ``python3`` on stdin with
one JSON argument (the layout's paths, the ports, the packages to look for, the services) and
reads one JSON document back: Python's version, the clock, systemd, the packages present, the
ports and who holds them, whether the advertise address is the host's own, Docker's and
etcd's versions, the installed build, the hashes of the configuration files and the services'
states. It changes nothing. It runs under any Python 3 so that an old one is reported, not
crashed on (any Python 3.7 or later).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any


def run(argv: list[str], timeout: float = 10.0, env: dict[str, str] | None = None) -> str | None:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def packages(names: list[str]) -> dict[str, bool]:
    found: dict[str, bool] = {}
    for name in names:
        status = run(["dpkg-query", "-W", "-f=${Status}", name]) or ""
        found[name] = status.endswith("install ok installed")
    return found


def own_address(address: str) -> bool:
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((sockaddr[0], 0))
                return True
            except OSError:
                continue
    return False


def listeners() -> dict[int, list[tuple[str, str]]]:
    """{port: [socket inode]} of the listening TCP sockets of this network namespace."""
    found: dict[int, list[tuple[str, str]]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != "0A":  # LISTEN
                continue
            address, port = parts[1].rsplit(":", 1)
            found.setdefault(int(port, 16), []).append((address, parts[9]))
    return found


def decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    return socket.inet_ntop(socket.AF_INET6, b"".join(words))


def socket_owners(inodes: Any) -> dict[str, str]:
    """{inode: cmdline} for the processes holding these sockets."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    owners: dict[str, str] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target in wanted:
                cmdline = read(f"/proc/{pid}/cmdline") or ""
                owners[target[8:-1]] = cmdline.replace("\0", " ").strip()
    return owners


def ports(advertise: str, numbers: list[int], ours: list[str]) -> dict[str, Any]:
    resolved: set[str] = set()
    with contextlib.suppress(OSError):
        resolved = {str(info[4][0]) for info in socket.getaddrinfo(advertise, None)}
    wildcard = {"0.0.0.0", "::"}
    table = listeners()
    holders: dict[int, str] = {}
    for number in numbers:
        for hex_address, inode in table.get(number, []):
            address = decode_address(hex_address)
            mapped = address[7:] if address.startswith("::ffff:") else address  # IPv4 on IPv6
            if address in wildcard or address in resolved or mapped in resolved:
                holders[number] = inode
    owners = socket_owners(holders.values()) if holders else {}
    result: dict[str, Any] = {}
    for number in numbers:
        if number not in holders:
            result[str(number)] = {"busy": False, "ours": False, "holder": ""}
            continue
        holder = owners.get(holders[number], "")
        result[str(number)] = {
            "busy": True,
            "ours": any(mark in holder for mark in ours),
            "holder": holder[:200],
        }
    return result


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_in(path: str) -> int | None:
    text = read(path)
    return int(text) if text and text.isdigit() else None


def started_at(pid: int) -> float | None:
    """The process's start time (seconds since the epoch), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def service_state(service: dict[str, str], systemd: bool) -> dict[str, Any]:
    state: dict[str, Any] = {"running": False, "pid": None, "since": None, "installed": False}
    if systemd:
        unit = service["unit"]
        state["installed"] = os.path.exists(service["unit_path"])
        if state["installed"]:
            with open(service["unit_path"], "rb") as f:
                state["unit_sha256"] = hashlib.sha256(f.read()).hexdigest()
        shown = run(["systemctl", "show", "-p", "MainPID", "-p", "ActiveState", unit]) or ""
        values = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        pid = int(values.get("MainPID", "0") or 0)
        if values.get("ActiveState") == "active" and pid:
            state.update(running=True, pid=pid, since=started_at(pid))
        return state
    keeper = pid_in(service["pidfile"])
    child = pid_in(service["child_pidfile"])
    state["installed"] = keeper is not None
    if keeper is not None and alive(keeper):
        state["running"] = True
        state["keeper"] = keeper
        if child is not None and alive(child):
            state.update(pid=child, since=started_at(child))
    return state


def file_hashes(root: str) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as f:
                    hashes[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                continue
    return hashes


def theseus_version(python: str) -> str | None:
    """The version of Theseus in the venv, from its dist-info directory's name."""
    lib = os.path.join(os.path.dirname(os.path.dirname(python)), "lib")
    try:
        for version_dir in os.listdir(lib):
            site = os.path.join(lib, version_dir, "site-packages")
            for name in os.listdir(site):
                if name.startswith("theseus_orchestrator-") and name.endswith(".dist-info"):
                    return name[len("theseus_orchestrator-") : -len(".dist-info")]
    except OSError:
        return None
    return None


def main() -> None:
    args = json.loads(sys.argv[1])
    systemd = os.path.isdir("/run/systemd/system")
    docker_env = dict(os.environ, DOCKER_HOST=args["docker_host"])
    docker = None
    if shutil.which("docker"):
        docker = run(["docker", "version", "--format", "{{.Server.Version}}"], env=docker_env)
    etcd = None
    if shutil.which("etcd"):
        first = (run(["etcd", "--version"]) or "").splitlines()
        etcd = first[0].split(":", 1)[-1].strip() if first else None
    services = {s["name"]: service_state(s, systemd) for s in args["services"]}
    for name, service in services.items():
        service["started"] = read(os.path.join(args["etc"], name + ".started"))
    facts = {
        "python": list(sys.version_info[:3]),
        "time": time.time(),
        "systemd": systemd,
        "apt": shutil.which("apt-get") is not None,
        "packages": packages(args["packages"]),
        "own_address": own_address(args["advertise"]),
        "ports": ports(args["advertise"], args["ports"], args["ours"]),
        "docker": docker,
        "etcd": etcd,
        "build": read(args["build_record"]),
        "venv": os.path.exists(args["python"]),
        "files": file_hashes(args["etc"]),
        "services": services,
        "agent_joined": os.path.exists(args["agent_cert"]),
        "installed_packages": (read(args["packages_record"]) or "").split(),
        "theseus_version": theseus_version(args["python"]),
    }
    json.dump(facts, sys.stdout)


if __name__ == "__main__":
    main()
