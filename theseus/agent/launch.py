"""What a driver is told to start for one assignment (pure): ``Launch`` and a pod's members.

Called by the task runner (``theseus.agent.runner``) before each start; unit-tested on its
own. Resolves the spec, the node and the discovery endpoint into labels (named in
``theseus.images.labels``), port bindings and each container's environment
(``theseus.agent.environment``).
"""

from __future__ import annotations

from theseus.agent.drivers.base import Launch, MemberLaunch, Owner, PortBinding
from theseus.agent.environment import image_name_and_tag, task_environment
from theseus.agent.gates import resolved_volumes
from theseus.api.schemas import Assignment
from theseus.images.labels import (
    LABEL_CLUSTER,
    LABEL_FENCE_AFTER,
    LABEL_GROUP,
    LABEL_NODE,
    LABEL_SERVICE,
    LABEL_TASK,
    LABEL_VERSION,
)
from theseus.model.hostgates import NodeGates
from theseus.model.spec import GroupSpec

NO_GATES = NodeGates()


def launch_of(
    assignment: Assignment,
    owner: Owner,
    discovery: str | None = None,
    gates: NodeGates = NO_GATES,
) -> Launch:
    """The driver's view of an assignment (pure); ``discovery`` is the driver's address of
    the node's discovery endpoint (``TaskDriver.discovery``); ``gates``, the node's host
    volumes, which the spec's volumes name. The runner has checked the spec against them
    (``theseus.agent.gates.refusal``)."""
    spec = assignment.spec
    labels = {
        LABEL_TASK: assignment.task_id,
        LABEL_SERVICE: assignment.service,
        LABEL_GROUP: assignment.group,
        LABEL_NODE: owner.node,
        LABEL_CLUSTER: owner.cluster_id,
        LABEL_VERSION: assignment.version,
        LABEL_FENCE_AFTER: str(spec.stop_after_server_loss_seconds),
    }
    ports = [
        PortBinding(name, container_port, assignment.host_ports[name])
        for name, container_port in spec.ports.items()
        if name in assignment.host_ports
    ]
    environment = task_environment(assignment, owner.node, owner.address, discovery)
    members = members_of(spec, environment, gates)
    return Launch(
        task_id=assignment.task_id,
        image=spec.image if spec.image is not None else spec.images[0],
        environment=environment,
        labels=labels,
        ports=ports,
        cpus=spec.cpus,
        mem=spec.mem,
        volumes=resolved_volumes(spec.volumes, gates),
        command=spec.command,
        args=list(spec.args) if spec.args is not None else None,
        members=members,
        init=spec.init,
        privileged=spec.privileged,
        host_network=spec.network_mode == "host",
        host_pid=spec.pid_mode == "host",
        cap_add=list(spec.cap_add),
        pull=spec.pull,
        logs=spec.logs,
    )


def members_of(
    spec: GroupSpec, environment: dict[str, str], gates: NodeGates = NO_GATES
) -> list[MemberLaunch]:
    """A pod's members (pure; none for a single container). Each member's environment is the
    task's (which already holds the group's ``environment``), then its own image's
    ``DOCKER_IMAGE``/``DOCKER_TAG`` and ``THESEUS_CONTAINER``, then its own ``environment``,
    which wins over everything. The group's volumes come before the member's."""
    members: list[MemberLaunch] = []
    for container in spec.containers or []:
        env = dict(environment)
        env["DOCKER_IMAGE"], env["DOCKER_TAG"] = image_name_and_tag(container.image)
        env["THESEUS_CONTAINER"] = container.name
        env.update(container.environment)
        members.append(
            MemberLaunch(
                name=container.name,
                image=container.image,
                environment=env,
                cpus=container.cpus,
                mem=container.mem,
                volumes=resolved_volumes([*spec.volumes, *container.volumes], gates),
                command=container.command,
                args=list(container.args) if container.args is not None else None,
                pull=container.pull or spec.pull,
            )
        )
    return members
