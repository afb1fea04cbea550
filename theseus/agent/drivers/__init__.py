"""Task drivers: how the agent runs a task (``docker``, ``process`` or ``sim``).

``make_driver`` is called once by the agent at start. The docker driver is imported only when
it is used, so that ``process`` and ``sim`` agents never load the Docker client.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from theseus.agent.drivers.base import TaskDriver, discovery_dir
from theseus.images.tags import BUSYBOX_IMAGE
from theseus.model.logs import LogLimits

if TYPE_CHECKING:  # the docker driver's modules load only when it is used
    from theseus.agent.drivers.docker_pull import Logins

DRIVERS = ("docker", "process", "sim")
DEFAULT_PULL_TIMEOUT = 300.0


@dataclass(frozen=True)
class ImageSettings:
    """The agent's options for images (``theseus agent --pull-timeout``,
    ``--pull-unqualified``, ``--pod-infra-image``) and where registry logins come from."""

    pull_timeout: float = DEFAULT_PULL_TIMEOUT
    pull_unqualified: bool = False
    pod_infra_image: str = BUSYBOX_IMAGE
    logins: Logins | None = None


async def default_driver_name() -> str:
    """``docker`` when a Docker Engine answers, else ``process``."""
    from theseus.agent.drivers.docker import docker_answers

    return "docker" if await docker_answers() else "process"


async def make_driver(
    name: str | None,
    state_dir: Path,
    images: ImageSettings | None = None,
    log_limits: LogLimits | None = None,
) -> TaskDriver:
    """A driver by name; ``None`` picks the default for this machine. ``images``: how the
    docker driver gets its images (the others ignore it); ``log_limits``: the bound of each
    task's logs where its spec sets none (``--log-max-size``, ``--log-max-files``)."""
    if name is None:
        name = await default_driver_name()
    if name == "docker":
        from theseus.agent.drivers.docker import DockerDriver
        from theseus.agent.drivers.docker_pull import PullOptions

        images = images or ImageSettings()
        options = PullOptions(images.pull_timeout, images.pull_unqualified, images.logins)
        return DockerDriver(discovery_dir(state_dir), options, images.pod_infra_image, log_limits)
    if name == "process":
        from theseus.agent.drivers.process import ProcessDriver

        return ProcessDriver(state_dir, log_limits)
    if name == "sim":
        from theseus.agent.drivers.sim import SimDriver

        return SimDriver()
    raise ValueError(f"unknown driver {name!r}; choose one of {', '.join(DRIVERS)}")
