"""Wire types of controlled rollouts: ``/v1/deployments`` and a group's spec versions
(``/v1/groups/{service}/versions``, ``/rollback``). The stored ``DeploymentRecord`` is sent
as it is."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from theseus.model.deployments import DeploymentRecord
from theseus.model.spec import GroupSpec


class DeploymentList(BaseModel):
    """Running deployments, or with ``all=true`` also the finished ones kept, newest first."""

    deployments: list[DeploymentRecord]


class VersionInfo(BaseModel):
    number: int
    digest: str
    created_at: float
    deployment: str | None
    current: bool
    images: list[str]
    instances: int
    spec: GroupSpec


class VersionList(BaseModel):
    service: str
    labels: list[str]
    current: int  # the group's version number now
    versions: list[VersionInfo]  # newest first


class RestartRequest(BaseModel):
    """``POST /v1/groups/{service}/restart``: which group of the service (by its labels;
    omitted: the service's only group)."""

    model_config = ConfigDict(extra="forbid")

    labels: list[StrictStr] | None = None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[StrictStr] | None = None
    # Omitted: the newest kept version before the current one with another spec.
    version: StrictInt | None = Field(None, ge=1)
