"""The rollout tests' group and how they follow a deployment (``docs/deployments.md``): a
group of four that keeps half its capacity during an update and fails after 8 s without
progress, an image that never pulls, and the deployment and readiness checks.

Shared by ``tests/integration/test_rollouts.py`` and ``test_rollouts_ha.py``.
"""

from __future__ import annotations

from typing import Any

from tests.kit.wait import wait_until
from theseus.api.client import ServerClient
from theseus.model.deployments import DeploymentRecord

DEADLINE = 8.0
STRATEGY = {
    "minimum_health_capacity": 0.5,
    "maximum_over_capacity": 0.0,
    "progress_deadline_seconds": DEADLINE,
}
BASE: dict[str, Any] = {
    "image": "theseus/busybox:latest",
    "instances": 4,
    "cpus": 0.05,
    "mem": 32,
    "backoff_seconds": 0.5,
    "task_kill_grace_period_seconds": 1,
    "upgrade_strategy": STRATEGY,
}
BROKEN = "theseus/does-not-exist:1"  # never built here, never pulled: its tasks fail to start


def ready(client: ServerClient, service: str, version: str | None = None) -> int:
    """Tasks meant to run that are ready: running and, with health checks, healthy."""
    return sum(
        1
        for t in client.tasks(service).tasks
        if t.state == "running"
        and t.desired == "run"
        and t.health in (None, "healthy")
        and version in (None, t.version)
    )


def finished(client: ServerClient, deployment_id: str, timeout: float) -> DeploymentRecord:
    """Until the deployment is no longer running; its record."""

    def done() -> DeploymentRecord | None:
        found = client.deployment(deployment_id)
        return found if not found.running else None

    return wait_until(done, timeout, f"deployment {deployment_id} finished")
