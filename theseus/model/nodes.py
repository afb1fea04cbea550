"""Nodes: machines that run an agent. Liveness lives apart, in a leased etcd key, and the
operator's scheduling controls (drain, eligibility) apart again, so that an agent registering
again never overwrites what the operator decided."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from theseus.model.hostgates import NodeGates


class NodeRecord(BaseModel):
    """What an agent declared when it registered."""

    model_config = ConfigDict(frozen=True)

    name: str
    address: str
    agent_port: int
    cpus: float
    mem: float
    port_range: tuple[int, int] = (31000, 32000)
    attributes: dict[str, str] = Field(default_factory=dict)
    driver: str = "docker"
    registered_at: float
    # Host volumes and privileges its agent allows (none: a node registered by an older agent).
    gates: NodeGates = Field(default_factory=NodeGates)


class NodeControl(BaseModel):
    """The operator's say over a node (``theseus nodes drain|ineligible|eligible``).

    Nomad's semantics: an ineligible node takes no new tasks but keeps the ones it has; a
    draining node is also ineligible, and its tasks are moved to other nodes, each replacement
    started before the task it replaces is stopped.
    """

    model_config = ConfigDict(frozen=True)

    schedulable: bool = True
    drain: bool = False
    updated_at: float

    @property
    def label(self) -> str:
        if self.drain:
            return "draining"
        return "eligible" if self.schedulable else "ineligible"
