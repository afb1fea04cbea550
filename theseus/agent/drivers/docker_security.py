"""What every container of the docker driver runs with, and what a spec may add (pure).

Called by ``theseus.agent.drivers.docker_config`` (single containers) and ``docker_pods`` (a
pod's infrastructure container and its members) while they build ``containers/create`` bodies.

Every container runs with ``no-new-privileges`` (a setuid binary cannot raise its
privileges) and without ``NET_RAW`` (no forged packets on the node's networks), unless the
spec adds it back with ``cap_add`` on a node that allows it. The spec's ``privileged``,
``pid_mode: host`` and ``cap_add`` apply to each container that runs its code; the network
namespace is the infrastructure container's in a pod (``network_mode``). The runner has
already checked all of them against the node's gates (``theseus.agent.gates``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from theseus.agent.drivers.base import Launch
from theseus.model.hostgates import DROPPED_CAPS

NO_NEW_PRIVILEGES = "no-new-privileges"


def hardening(cap_add: Sequence[str] = ()) -> dict[str, Any]:
    """The ``HostConfig`` keys every container gets (a pod's infrastructure container too)."""
    return {
        "SecurityOpt": [NO_NEW_PRIVILEGES],
        "CapDrop": [cap for cap in DROPPED_CAPS if cap not in cap_add],
    }


def privileges(launch: Launch) -> dict[str, Any]:
    """``HostConfig`` keys for a single container (a pod's members join the infrastructure
    container's network instead, ``pod_privileges``): the hardening, and what the spec asked
    for (only the keys it set)."""
    config = hardening(launch.cap_add)
    if launch.host_network:
        config["NetworkMode"] = "host"
    if launch.cap_add:
        config["CapAdd"] = list(launch.cap_add)
    if launch.privileged:
        config["Privileged"] = True
    if launch.host_pid:
        config["PidMode"] = "host"
    return config


def pod_privileges(launch: Launch) -> dict[str, Any]:
    """``privileges`` for a pod's member: its network is the infrastructure container's."""
    config = privileges(launch)
    config.pop("NetworkMode", None)
    return config


def infra_privileges(launch: Launch) -> dict[str, Any]:
    """A pod's infrastructure container runs no task code: only the hardening, and the host
    network when the spec asks for it (its members share its namespace)."""
    config = hardening()
    if launch.host_network:
        config["NetworkMode"] = "host"
    return config
