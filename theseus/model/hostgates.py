"""What a node lets a spec do to its host: named host volumes, privileges, capabilities (pure).

Owns the vocabulary shared by the three places that enforce it (see "What a spec may do to a
host" in README.md):

* the server, when a spec is validated (``theseus.model.fields``, ``theseus.model.spec_gates``):
  a host path in ``volumes`` is refused, since no node could ever be allowed to mount it;
* placement (``theseus.scheduler.filters``): a task goes only to a node whose ``NodeGates``
  allow what its spec asks for (``theseus.model.spec_gates.unmet``);
* the agent, before it starts anything (``theseus.agent.gates``): the same checks again, and
  its own declarations (``--host-volume``) against ``protected_reason`` at start.

A spec mounts ``NAME:/container/path[:ro|rw]``; the node declares ``NAME=/host/path[:ro]``
(Nomad's ``host_volume``). Whatever a node declares, some host paths are never mounted: the
root, the kernel's and the system's trees, the container engine's socket and data, etcd's data
and Theseus's own state (``protected_reason``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

HOST_VOLUME_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_NAME = re.compile(HOST_VOLUME_NAME)
_VOLUME = re.compile(r"^(?P<source>[^:]+):(?P<target>/[^:]*)(?::(?P<mode>ro|rw))?$")

HOST_VOLUME_FLAG = "--host-volume NAME=/path"

# Host paths no declaration may expose, nor any directory that holds one of them (mounting
# /var exposes /var/lib/etcd; mounting / exposes everything). Docker's socket and data, and
# containerd's, are root on the host. An agent adds its own state directory and Theseus's.
PROTECTED_PATHS: tuple[str, ...] = (
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/lib/docker",
    "/run/containerd",
    "/var/lib/etcd",
)

# Kubernetes' Pod Security Standards "Baseline": the capabilities a container may add without
# the operator's say (Docker grants them by default anyway, NET_RAW aside). Nomad's
# ``allow_caps`` default is the same list.
BASELINE_CAPS: frozenset[str] = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)

# Every Linux capability (capabilities(7), without the ``CAP_`` prefix).
KNOWN_CAPS: frozenset[str] = BASELINE_CAPS | frozenset(
    {
        "AUDIT_CONTROL",
        "AUDIT_READ",
        "BLOCK_SUSPEND",
        "BPF",
        "CHECKPOINT_RESTORE",
        "DAC_READ_SEARCH",
        "IPC_LOCK",
        "IPC_OWNER",
        "LEASE",
        "LINUX_IMMUTABLE",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "NET_ADMIN",
        "NET_BROADCAST",
        "NET_RAW",
        "PERFMON",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_MODULE",
        "SYS_NICE",
        "SYS_PACCT",
        "SYS_PTRACE",
        "SYS_RAWIO",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "SYSLOG",
        "WAKE_ALARM",
    }
)

# Dropped from every container (unless the spec adds it back, where the node allows it):
# raw sockets let a container forge packets on the node's networks.
DROPPED_CAPS: tuple[str, ...] = ("NET_RAW",)


class HostVolume(BaseModel):
    """A host directory a node offers to specs under ``name`` (``--host-volume``)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=HOST_VOLUME_NAME)
    path: str
    read_only: bool = False


class NodeGates(BaseModel):
    """What a node's agent allows its tasks, as it declared when it registered."""

    model_config = ConfigDict(frozen=True)

    host_volumes: list[HostVolume] = Field(default_factory=list)
    allow_privileged: bool = False
    allow_host_namespaces: bool = False
    # Capabilities beyond the Baseline a spec may add here (``--allow-cap``).
    allow_caps: list[str] = Field(default_factory=list)

    def volume(self, name: str) -> HostVolume | None:
        return next((v for v in self.host_volumes if v.name == name), None)

    def allows_cap(self, cap: str) -> bool:
        return cap in BASELINE_CAPS or cap in self.allow_caps


@dataclass(frozen=True)
class VolumeMount:
    """One ``volumes`` entry of a spec: ``source:target[:mode]``. ``source`` is a host volume's
    name, or (refused, but still readable in records written before the gates) a host path."""

    source: str
    target: str
    mode: Literal["ro", "rw"] | None = None

    @property
    def is_host_path(self) -> bool:
        return self.source.startswith("/")


def parse_volume(text: str) -> VolumeMount | None:
    """``NAME:/container/path[:ro|rw]`` (or a legacy ``/host/path:...``); ``None`` if malformed."""
    match = _VOLUME.match(text)
    if match is None:
        return None
    source = match["source"]
    if not source.startswith("/") and not _NAME.match(source):
        return None
    mode = match["mode"]
    return VolumeMount(source, match["target"], "ro" if mode == "ro" else "rw" if mode else None)


def normalise_cap(name: str) -> str:
    """``cap_sys_admin``, ``CAP_SYS_ADMIN`` and ``SYS_ADMIN`` are one capability."""
    upper = name.strip().upper()
    return upper.removeprefix("CAP_")


def cap_problem(name: str) -> str | None:
    """Why ``name`` (normalised) cannot be in any ``cap_add``, or ``None``."""
    if name == "ALL":
        return "'ALL' is not accepted: use privileged: true (allowed by --allow-privileged)"
    if name not in KNOWN_CAPS:
        return f"{name!r} is not a Linux capability"
    return None


def _within(path: PurePosixPath, other: PurePosixPath) -> bool:
    return path == other or other in path.parents


def protected_reason(path: str, extra: Iterable[str] = ()) -> str | None:
    """Why the host ``path`` can never be mounted (it is, lies under, or holds a protected
    path: ``PROTECTED_PATHS`` and ``extra``), or ``None``. ``path`` should be absolute and
    already resolved (symlinks followed) by the caller; ``..`` is refused here."""
    candidate = PurePosixPath(path)
    if not candidate.is_absolute() or ".." in candidate.parts:
        return f"{path!r} must be an absolute path without '..'"
    if candidate == PurePosixPath("/"):
        return "/ (the whole host) is never mounted"
    for protected in (*PROTECTED_PATHS, *extra):
        other = PurePosixPath(protected)
        if candidate == other:
            return f"{path} is never mounted"
        if _within(candidate, other):
            return f"{path} is under {protected}, which is never mounted"
        if _within(other, candidate):
            return f"{path} holds {protected}, which is never mounted"
    return None


def host_path_message(entry: str, host_path: str) -> str:
    """Why the volume ``entry`` (whose source is ``host_path``) is refused, and what to do."""
    never = protected_reason(host_path)
    return (
        f"{entry!r} mounts a host path, which a spec may not do: the node's operator declares "
        f"the directory (theseus agent {HOST_VOLUME_FLAG}[:ro]) and the spec mounts "
        "NAME:/container/path" + (f" ({never}, whatever an agent declares)" if never else "")
    )
