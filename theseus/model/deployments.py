"""Stored records of controlled rollouts: a group's spec versions and its deployments.

* ``SpecVersion`` (``/theseus/versions/<group>/<n>``): the spec a group had at version ``n``;
  versions are numbered 1, 2, 3... per group (like Nomad's job versions), the last
  ``VERSIONS_KEPT`` are kept.
* ``DeploymentRecord`` (``/theseus/deployments/<id>``): one change of a group from one version
  to another, followed by the leader until it succeeds, fails (progress deadline), is
  cancelled or is superseded by the next change of the same group.

Written by ``theseus.server.writes`` (with the group change, in one transaction) and by the
leader (``theseus.reconciler.deployments`` decides what).
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict

from theseus.model.spec import GroupSpec

VERSIONS_KEPT = 10
DeploymentKind = Literal["create", "update", "scale", "rollback", "revert", "restart"]
DeploymentStatus = Literal["running", "successful", "failed", "cancelled", "superseded"]
FINISHED: tuple[DeploymentStatus, ...] = ("successful", "failed", "cancelled", "superseded")


def new_deployment_id() -> str:
    return f"d-{uuid.uuid4().hex[:8]}"


class SpecVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    number: int
    digest: str  # ``GroupSpec.version()``: tasks of another digest get replaced
    spec: GroupSpec
    created_at: float
    deployment: str | None = None  # the deployment that introduced it


class DeploymentRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    group: str  # ``GroupKey.key``
    service: str
    labels: list[str]
    kind: DeploymentKind
    from_version: int | None  # None: the group was created
    to_version: int
    digest: str  # the target spec's digest: tasks of this version are "new"
    instances: int
    status: DeploymentStatus = "running"
    started_at: float
    updated_at: float
    # Fails when this passes without one more new task ready (restarted at each one).
    deadline: float
    progress_deadline_seconds: float
    auto_revert: bool
    ready: int = 0  # new tasks ready now
    best: int = 0  # the most new tasks ever ready at once: only beating it is progress
    message: str = ""

    @property
    def running(self) -> bool:
        return self.status == "running"
