"""Task drivers: how the agent runs a task (``docker``, ``process`` or ``sim``).

``make_driver`` is called once by the agent at start. The docker driver is imported only when
it is used, so that ``process`` and ``sim`` agents never load the Docker client.
"""

from __future__ import annotations

from pathlib import Path

from theseus.agent.drivers.base import TaskDriver, discovery_dir

DRIVERS = ("docker", "process", "sim")


async def default_driver_name() -> str:
    """``docker`` when a Docker Engine answers, else ``process``."""
    from theseus.agent.drivers.docker import docker_answers

    return "docker" if await docker_answers() else "process"


async def make_driver(name: str | None, state_dir: Path) -> TaskDriver:
    """A driver by name; ``None`` picks the default for this machine."""
    if name is None:
        name = await default_driver_name()
    if name == "docker":
        from theseus.agent.drivers.docker import DockerDriver

        return DockerDriver(discovery_dir(state_dir))
    if name == "process":
        from theseus.agent.drivers.process import ProcessDriver

        return ProcessDriver(state_dir)
    if name == "sim":
        from theseus.agent.drivers.sim import SimDriver

        return SimDriver()
    raise ValueError(f"unknown driver {name!r}; choose one of {', '.join(DRIVERS)}")
