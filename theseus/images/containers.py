"""A cluster's containers on this machine's Docker Engine: ``theseus down`` removes them.

Called by the local launcher (``theseus.cluster.local``) once the cluster's agents are stopped,
and by the integration tests to clean up. It finds the containers by the cluster label every
task's containers carry (``theseus.images.labels``), whichever agent started them and whether
they belong to a pod or not. It lives here rather than in the agent so that the CLI removes
them without importing the agent; with ``build`` and the docker driver, one of the few modules
that import aiodocker.
"""

from __future__ import annotations

import aiodocker
from aiodocker.exceptions import DockerError

from theseus.images.labels import LABEL_CLUSTER


async def remove_cluster_containers(cluster_id: str) -> int:
    """Force-remove every container labelled ``theseus.cluster=<cluster_id>``; how many."""
    removed = 0
    async with aiodocker.Docker() as docker:
        containers = await docker.containers.list(
            all=True, filters={"label": [f"{LABEL_CLUSTER}={cluster_id}"]}
        )
        for container in containers:
            try:
                await container.delete(force=True, v=True)
            except DockerError as exc:
                if exc.status not in (404, 409):  # already gone or being removed
                    raise
                continue
            removed += 1
    return removed
