"""Nodes: machines that run an agent. Liveness lives apart, in a leased etcd key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
