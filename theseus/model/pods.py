"""Pods as written in a deploy document: ``containers:``, a group of containers run as one task.

Owns the shape and validation of one pod member (``deploy.<service>.containers.N``). A pod is
Nomad's task group or Kubernetes' pod: its containers are always placed together on one node,
share one network namespace (``localhost`` between them, and the group's ``ports``), and are
started and stopped together. Each has its own image, command, environment, resources and
health checks. The group's ``environment`` and ``volumes`` apply to every member (a member's
own environment wins); the group's ``cpus`` and ``mem`` are the sums of the members'.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StrictStr, model_validator

from theseus.model.fields import EnvName, EnvValue, PullPolicy, Volume
from theseus.model.health import MARATHON_KEYS, HealthCheck

CONTAINER_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # a DNS label, as Kubernetes

DEFAULT_CONTAINER_CPUS = 0.1
DEFAULT_CONTAINER_MEM = 128.0


class ContainerSpec(BaseModel):
    """One member of a pod."""

    model_config = MARATHON_KEYS

    name: Annotated[StrictStr, Field(pattern=CONTAINER_NAME_PATTERN)]
    image: Annotated[StrictStr, Field(min_length=1)]
    command: StrictStr | None = None
    args: list[StrictStr] | None = None
    environment: dict[EnvName, EnvValue] = Field(default_factory=dict)
    cpus: Annotated[float, Field(gt=0, le=1024)] = DEFAULT_CONTAINER_CPUS
    mem: Annotated[float, Field(gt=0, le=4_194_304)] = DEFAULT_CONTAINER_MEM
    volumes: list[Volume] = Field(default_factory=list)
    health_checks: list[HealthCheck] = Field(default_factory=list)
    pull: PullPolicy | None = None  # None: the group's ``pull``

    @model_validator(mode="after")
    def _command_or_args(self) -> ContainerSpec:
        if self.command is not None and self.args is not None:
            raise ValueError("give either 'command' (a shell string) or 'args' (a list), not both")
        return self


def check_members(containers: list[ContainerSpec]) -> str | None:
    """Why a pod's member list is unacceptable, or ``None``."""
    if not containers:
        return "containers: a pod needs at least one container"
    seen: set[str] = set()
    for index, container in enumerate(containers):
        if container.name in seen:
            return f"containers.{index}.name: {container.name!r} is used twice in the pod"
        seen.add(container.name)
    return None
