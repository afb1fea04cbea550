"""The agent's side of the spec gates: what this node allows its tasks, checked at start and
before every task start (``theseus.model.hostgates`` has the vocabulary and the rules;
``theseus.cli.agent_cmd`` reads the flags that declare them).

* ``checked_gates`` (I/O: it resolves symlinks, looks whether each path exists, and looks for
  etcd's data or Theseus's state at, above and a few levels below it) refuses, at the agent's
  start, a declaration of a protected path, whatever its spelling; called by
  ``theseus.agent.agent.run_agent``, so an agent with such a flag never registers;
* ``refusal`` (pure) is asked by the task runner (``theseus.agent.runner``) before each
  start: an assignment that carries a host path, an undeclared volume or a privilege this node
  does not allow (written into etcd by hand, or placed by an older server) fails with the
  reason, and nothing is started;
* ``resolved_volumes`` (pure) turns a spec's ``NAME:/container/path[:mode]`` into the bind the
  driver performs, ``/host/path:/container/path:mode`` (``theseus.agent.launch``).
"""

from __future__ import annotations

import os
from pathlib import Path

from theseus.model.hostgates import HostVolume, NodeGates, parse_volume, protected_reason
from theseus.model.spec import GroupSpec
from theseus.model.spec_gates import needs_of, unmet


class GateError(ValueError):
    """A declaration the agent refuses to start with; the message names the flag."""


def theseus_state_dirs(state_dir: Path) -> list[str]:
    """Theseus's own state, never mountable: this agent's state directory, the cluster's
    (``theseus up`` and the test kit keep agents in ``<cluster state>/agents/<node>``, beside
    etcd's data) and the default base, ``$XDG_STATE_HOME/theseus``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    found = [state_dir.resolve(), Path(base).resolve() / "theseus"]
    if state_dir.resolve().parent.name == "agents":
        found.append(state_dir.resolve().parent.parent)
    return [str(path) for path in found]


# What a data directory of etcd, or the state directory of ``theseus up``, holds: found at, above
# or below a declared path, wherever it lives (a protected list knows only the usual places).
_STATE_MARKERS = (("member", "wal"), ("member", "snap"), ("cluster.json",))
SCAN_DEPTH = 3  # ``theseus up --ha`` keeps etcd's data at <state>/etcd/cluster-of-3/etcd-1
SCAN_LIMIT = 5000  # directories looked into below a declaration, at most


def _is_state(directory: Path) -> bool:
    return any(directory.joinpath(*marker).exists() for marker in _STATE_MARKERS)


def state_within(path: Path) -> Path | None:
    """An etcd data directory or a Theseus state directory that ``path`` is, lies in, or
    holds (up to ``SCAN_DEPTH`` levels below, symlinks not followed), or ``None``."""
    for candidate in (path, *path.parents):
        if _is_state(candidate):
            return candidate
    level, seen = [path], 0
    for _ in range(SCAN_DEPTH):
        below: list[Path] = []
        for directory in level:
            try:
                with os.scandir(directory) as entries:
                    below += [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
            except OSError:
                continue
        for directory in below:
            seen += 1
            if seen > SCAN_LIMIT:
                return None
            if _is_state(directory):
                return directory
        level = below
    return None


def checked_gates(gates: NodeGates, state_dir: Path) -> NodeGates:
    """``gates`` with every host volume's path resolved (symlinks followed), or ``GateError``
    for a path that does not exist, or that is, lies under or holds a protected one."""
    protected = theseus_state_dirs(state_dir)
    seen: set[str] = set()
    volumes: list[HostVolume] = []
    for volume in gates.host_volumes:
        flag = f"--host-volume {volume.name}={volume.path}"
        if volume.name in seen:
            raise GateError(f"{flag}: the name {volume.name!r} is declared twice")
        seen.add(volume.name)
        path = Path(volume.path)
        if not path.is_dir():
            raise GateError(f"{flag}: {volume.path} is not an existing directory")
        real = str(path.resolve())
        for spelling in dict.fromkeys((volume.path, real)):
            problem = protected_reason(spelling, protected)
            if problem is not None:
                raise GateError(f"{flag}: refused, {problem}, whatever an agent declares")
        found = state_within(Path(real))
        if found is not None:
            raise GateError(
                f"{flag}: refused, {real} is, lies in or holds {found}, etcd's data or "
                "Theseus's state, which is never mounted, whatever an agent declares"
            )
        volumes.append(volume.model_copy(update={"path": real}))
    return gates.model_copy(update={"host_volumes": volumes})


def refusal(spec: GroupSpec, gates: NodeGates) -> str | None:
    """Why this node must not start a task of ``spec`` (pure), or ``None``."""
    needs = needs_of(spec)
    if not needs.any:
        return None
    if needs.host_paths:
        where, entry, _ = needs.host_paths[0]
        return (
            f"{where}: {entry!r} mounts a host path; this node mounts only the host volumes "
            "its agent declares (--host-volume NAME=/path), by name"
        )
    return unmet(needs, gates)


def resolved_volumes(volumes: list[str], gates: NodeGates) -> list[str]:
    """Each ``NAME:/target[:mode]`` as ``/host/path:/target:mode`` (pure). A declared
    read-only volume is always mounted ``ro``. ``refusal`` has passed: every name is known."""
    binds: list[str] = []
    for entry in volumes:
        mount = parse_volume(entry)
        declared = gates.volume(mount.source) if mount is not None else None
        if mount is None or declared is None:
            raise ValueError(f"volume {entry!r} names no host volume of this node")
        mode = "ro" if declared.read_only or mount.mode == "ro" else "rw"
        binds.append(f"{declared.path}:{mount.target}:{mode}")
    return binds
