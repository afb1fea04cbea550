"""The environment every task's container gets, as a pure function of its assignment.

Called by the task runner before each start (all drivers get the same variables). The
variables, in the order they are set; the spec's ``environment`` is applied last, so a user's
value wins over any of them (as in the original Theseus):

``SERVICE_NAME``
    The task's service (original Theseus).
``CONTAINER_NAME``
    The task id (original Theseus; unique per task, also across replacements).
``CONTAINER_HOST_ADDRESS``
    The advertise address of the node the task runs on (original Theseus).
``LABELS``
    JSON list of the group's labels, sorted, e.g. ``["dev", "frontend"]`` (original Theseus).
``HOST``
    The node's address (Marathon).
``PORT0``, ``PORT1``, ...
    Host ports, in the order the spec's ``ports`` mapping lists them (Marathon).
``PORT_<NAME>``
    The host port of the port named ``<name>``: uppercased, any character other than a letter
    or a digit becomes ``_`` (``ssh-alt`` gives ``PORT_SSH_ALT``) (Marathon).
``PORTS``
    Comma-separated host ports, in the same order as ``PORT0``... (Marathon).
``THESEUS_TASK_ID``, ``THESEUS_NODE``, ``THESEUS_SERVICE``, ``THESEUS_GROUP``
    The task id, node name, service and group key (``service/["label",...]``).
"""

from __future__ import annotations

import json
import re

from theseus.api.schemas import Assignment

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def port_variable(name: str) -> str:
    """``api`` → ``PORT_API``; ``ssh-alt`` → ``PORT_SSH_ALT``."""
    return "PORT_" + _NOT_ALNUM.sub("_", name).upper()


def task_environment(assignment: Assignment, node: str, address: str) -> dict[str, str]:
    """All variables for ``assignment`` running on ``node`` (advertised at ``address``)."""
    env: dict[str, str] = {
        "SERVICE_NAME": assignment.service,
        "CONTAINER_NAME": assignment.task_id,
        "CONTAINER_HOST_ADDRESS": address,
        "LABELS": json.dumps(sorted(set(assignment.labels))),
        "HOST": address,
    }
    host_ports: list[str] = []
    for name in assignment.spec.ports:
        host_port = assignment.host_ports.get(name)
        if host_port is None:  # the server allocates every named port; never invent one
            continue
        env[f"PORT{len(host_ports)}"] = str(host_port)
        env[port_variable(name)] = str(host_port)
        host_ports.append(str(host_port))
    env["PORTS"] = ",".join(host_ports)
    env["THESEUS_TASK_ID"] = assignment.task_id
    env["THESEUS_NODE"] = node
    env["THESEUS_SERVICE"] = assignment.service
    env["THESEUS_GROUP"] = assignment.group
    env.update(assignment.spec.environment)
    return env
