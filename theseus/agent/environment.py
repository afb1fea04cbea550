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
``THESEUS_DISCOVERY``
    The node's discovery endpoint, as the task reaches it: ``unix:///run/theseus/agent.sock``
    in a docker container, ``unix://<state dir>/discovery/agent.sock`` for a process task
    (the driver knows which). Absent when the driver offers none (``sim``).
``MAESTRO_ENVIRONMENT_NAME``
    ``default`` (what the original Theseus's ``guestutils.get_environment_name`` returned).
``DOCKER_IMAGE``, ``DOCKER_TAG``
    The spec's image without its tag, and the tag (maestro): ``host:5000/app:1.2`` gives
    ``host:5000/app`` and ``1.2``; no tag gives ``latest``; a digest is dropped from the name
    (``app@sha256:...`` gives ``app`` and, having no tag, the digest ``sha256:...``).
``<SERVICE>_<TASK>_HOST``
    The node's address, under maestro's name for this very container, where ``<SERVICE>`` and
    ``<TASK>`` are the service and task id with every character other than a letter, digit or
    ``_`` turned into ``_`` and upper-cased (maestro's transliteration): task ``web.a1-b`` of
    service ``my-web`` gives ``MY_WEB_WEB_A1_B_HOST``.
``<SERVICE>_<TASK>_<NAME>_PORT``, ``<SERVICE>_<TASK>_<NAME>_INTERNAL_PORT``
    For each named port: its host port and its container port (maestro; ``<NAME>``
    transliterated the same way).
"""

from __future__ import annotations

import json
import re

from theseus.api.schemas import Assignment

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
_NOT_WORD = re.compile(r"[^\w]")
ENVIRONMENT_NAME = "default"


def port_variable(name: str) -> str:
    """``api`` → ``PORT_API``; ``ssh-alt`` → ``PORT_SSH_ALT``."""
    return "PORT_" + _NOT_ALNUM.sub("_", name).upper()


def maestro_name(name: str) -> str:
    """maestro's transliteration of a name into part of a variable name:
    ``web.a1-b`` → ``WEB_A1_B``."""
    return _NOT_WORD.sub("_", name).upper()


def image_name_and_tag(image: str) -> tuple[str, str]:
    """``host:5000/app:1.2`` → ``("host:5000/app", "1.2")``; ``app`` → ``("app", "latest")``;
    ``app@sha256:ab`` → ``("app", "sha256:ab")``; ``app:1@sha256:ab`` → ``("app", "1")``."""
    name, _, digest = image.partition("@")
    colon = name.rfind(":")
    if colon > name.rfind("/"):  # a colon before the last slash is a registry's port
        return name[:colon], name[colon + 1 :] or "latest"
    return name, digest or "latest"


def task_environment(
    assignment: Assignment, node: str, address: str, discovery: str | None
) -> dict[str, str]:
    """All variables for ``assignment`` running on ``node`` (advertised at ``address``),
    whose discovery endpoint the task reaches at ``discovery``."""
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
    if discovery is not None:
        env["THESEUS_DISCOVERY"] = discovery
    env["MAESTRO_ENVIRONMENT_NAME"] = ENVIRONMENT_NAME
    # A pod's members each see their own image: the docker driver sets these per container.
    image = assignment.spec.image or assignment.spec.images[0]
    env["DOCKER_IMAGE"], env["DOCKER_TAG"] = image_name_and_tag(image)
    myself = f"{maestro_name(assignment.service)}_{maestro_name(assignment.task_id)}"
    env[f"{myself}_HOST"] = address
    for name, container_port in assignment.spec.ports.items():
        host_port = assignment.host_ports.get(name)
        if host_port is not None:
            env[f"{myself}_{maestro_name(name)}_PORT"] = str(host_port)
            env[f"{myself}_{maestro_name(name)}_INTERNAL_PORT"] = str(container_port)
    env.update(assignment.spec.environment)
    return env
