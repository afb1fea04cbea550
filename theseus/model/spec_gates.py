"""What one spec asks of its node's host, and whether a node's declarations allow it (pure).

``needs_of`` reads a spec once (volumes of the group and of each pod member, privileges,
namespaces, capabilities); ``unmet`` says why a node's ``NodeGates`` do not allow it, naming
the agent flag that would. Callers:

* placement (``theseus.scheduler.filters.host_gates``): a node that does not allow a task's
  needs is not a candidate, and the task waits, saying why, per node;
* the agent (``theseus.agent.gates``), before each start: ``unmet`` again, plus the host paths
  (``Needs.host_paths``) that no node allows and the server refuses at validation;
* the server's writer (``theseus.server.writes``): ``host_path_errors`` for the specs a
  rollback or a cancel brings back (a version kept from before the gates existed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from theseus.model.hostgates import HOST_VOLUME_FLAG, NodeGates, host_path_message, parse_volume
from theseus.model.spec import GroupSpec


@dataclass(frozen=True)
class Needs:
    """A spec's demands on its host. ``volumes``: host volume name → whether some mount of
    it asks for write access (``:rw``); ``host_paths``: (field path, entry, source) of each
    volume entry whose source is a host path (or that does not parse: a hand-written record)."""

    volumes: dict[str, bool] = field(default_factory=dict)
    host_paths: list[tuple[str, str, str]] = field(default_factory=list)
    privileged: bool = False
    host_namespaces: list[str] = field(default_factory=list)  # "network_mode", "pid_mode"
    caps: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(
            self.volumes or self.host_paths or self.privileged or self.host_namespaces or self.caps
        )


def _volume_entries(spec: GroupSpec) -> list[tuple[str, str]]:
    entries = [(f"volumes.{i}", v) for i, v in enumerate(spec.volumes)]
    for m, member in enumerate(spec.containers or []):
        entries += [(f"containers.{m}.volumes.{i}", v) for i, v in enumerate(member.volumes)]
    return entries


NO_NEEDS = Needs()


def needs_of(spec: GroupSpec) -> Needs:
    """Asked for every placement and every start: a spec that asks nothing (most) costs a few
    attribute reads."""
    if not (
        spec.volumes
        or spec.containers
        or spec.privileged
        or spec.cap_add
        or spec.network_mode == "host"
        or spec.pid_mode == "host"
    ):
        return NO_NEEDS
    volumes: dict[str, bool] = {}
    host_paths: list[tuple[str, str, str]] = []
    for where, entry in _volume_entries(spec):
        mount = parse_volume(entry)
        if mount is None:  # the model refuses it; a record written by hand may not
            host_paths.append((where, entry, entry.partition(":")[0]))
        elif mount.is_host_path:
            host_paths.append((where, entry, mount.source))
        else:
            volumes[mount.source] = volumes.get(mount.source, False) or mount.mode == "rw"
    namespaces = [key for key in ("network_mode", "pid_mode") if getattr(spec, key) == "host"]
    return Needs(volumes, host_paths, spec.privileged, namespaces, list(spec.cap_add))


def unmet(needs: Needs, gates: NodeGates) -> str | None:
    """Why a node with ``gates`` cannot run a task with ``needs`` (the first reason, naming
    the agent flag that would allow it), or ``None``. Host paths are not looked at here."""
    for name, writes in sorted(needs.volumes.items()):
        declared = gates.volume(name)
        if declared is None:
            return f"no host volume {name!r} ({HOST_VOLUME_FLAG.replace('NAME', name)})"
        if writes and declared.read_only:
            return f"host volume {name!r} is read-only here"
    if needs.privileged and not gates.allow_privileged:
        return "privileged is not allowed (--allow-privileged)"
    if needs.host_namespaces and not gates.allow_host_namespaces:
        keys = " and ".join(f"{key}: host" for key in needs.host_namespaces)
        return f"{keys} is not allowed (--allow-host-namespaces)"
    for cap in needs.caps:
        if not gates.allows_cap(cap):
            return f"cap_add {cap} is not allowed (--allow-cap {cap})"
    return None


def host_path_errors(service: str, spec: GroupSpec) -> list[dict[str, str]]:
    """One ``{path, message}`` per host path ``spec`` mounts (``deploy.<service>.volumes.N``)."""
    return [
        {"path": f"deploy.{service}.{where}", "message": host_path_message(entry, source)}
        for where, entry, source in needs_of(spec).host_paths
    ]
