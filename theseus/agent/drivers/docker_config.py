"""What the docker driver asks the Docker Engine for, built without I/O (pure; unit-tested).

Called by the docker driver (``theseus.agent.drivers.docker``): ``container_config`` is the
``containers/create`` body of a single container (a pod's are ``docker_pods``'s
``infra_config`` and ``member_config``), ``discovery_bind`` the read-only mount of the node's
discovery directory that every container gets (a pod's members too, through ``docker_pods``),
``exec_argv`` the command line of a health check's ``exec``, and ``node_filters`` the label
filter that picks this node's containers out of a listing (and, with ``docker_events``, out of
the event stream). The unit tests build them directly, with no Engine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from theseus.agent.drivers.base import DISCOVERY_MOUNT, Launch, Owner
from theseus.agent.drivers.docker_pods import published_ports
from theseus.agent.drivers.docker_security import privileges
from theseus.images.labels import LABEL_CLUSTER, LABEL_NODE
from theseus.model.logs import LogLimits


def node_filters(owner: Owner, with_cluster: bool = True) -> dict[str, list[str]]:
    """The Engine's label filter for ``owner``'s containers: this node's, and with
    ``with_cluster`` only those of its current cluster id."""
    labels = [f"{LABEL_NODE}={owner.node}"]
    if with_cluster:
        labels.append(f"{LABEL_CLUSTER}={owner.cluster_id}")
    return {"label": labels}


def discovery_bind(discovery_dir: Path | None, volumes: list[str]) -> list[str]:
    """The read-only bind of the node's discovery directory, unless there is none or the
    spec mounts something of its own at ``/run/theseus`` (the user's volume wins)."""
    if discovery_dir is None:
        return []
    if any(v.split(":")[1:2] in ([DISCOVERY_MOUNT], [DISCOVERY_MOUNT + "/"]) for v in volumes):
        return []
    return [f"{discovery_dir.absolute()}:{DISCOVERY_MOUNT}:ro"]


def container_config(
    launch: Launch,
    address: str,
    discovery_dir: Path | None = None,
    log_limits: LogLimits | None = None,
) -> dict[str, Any]:
    """The Engine's ``containers/create`` body for ``launch``. On the host's network nothing
    is published: the task listens on its ``PORT_<NAME>`` itself. Its logs are bounded by
    the spec's ``logs`` over ``log_limits`` (the agent's default)."""
    exposed, bindings = published_ports([] if launch.host_network else launch.ports, address)
    config: dict[str, Any] = {
        "Image": launch.image,
        "Env": [f"{key}={value}" for key, value in launch.environment.items()],
        "Labels": dict(launch.labels),
        "ExposedPorts": exposed,
        "HostConfig": {
            "NanoCpus": int(launch.cpus * 1e9),
            "Memory": int(launch.mem * 1024 * 1024),
            "PortBindings": bindings,
            "Binds": [*launch.volumes, *discovery_bind(discovery_dir, launch.volumes)],
            "Init": launch.init,
            "LogConfig": (log_limits or LogLimits()).over(launch.logs).docker_log_config(),
            **privileges(launch),
        },
    }
    if launch.command is not None:
        config["Cmd"] = ["/bin/sh", "-c", launch.command]
    elif launch.args is not None:
        config["Cmd"] = list(launch.args)
    return config


# The Engine cannot kill an exec'd process: a command that hangs would outlive every check.
# Where the image has ``timeout`` (busybox, coreutils), it kills the command at its deadline.
_EXEC_WRAPPER = (
    'if command -v timeout >/dev/null 2>&1; then exec timeout -s KILL "$0" /bin/sh -c "$1"; '
    'else exec /bin/sh -c "$1"; fi'
)


def exec_argv(command: str, timeout: float) -> list[str]:
    """``sh -c command`` in a container, killed after ``timeout`` (rounded up to a whole
    second) where the image can."""
    return ["/bin/sh", "-c", _EXEC_WRAPPER, str(max(1, math.ceil(timeout))), command]
