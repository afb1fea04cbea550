"""An in-memory driver for the agent's unit tests (``theseus.agent.drivers.base`` protocol):
containers are dict entries, every call is recorded, starts can be made to fail or to wait.

Used by the runner, checks and pods tests (``tests/unit/test_agent_*.py``,
``tests/unit/test_pods_agent.py``); ``runner.py`` next to it has the helpers around the runner.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from theseus.agent.drivers.base import (
    DriverError,
    ExitCallback,
    ExitNotice,
    Launch,
    Observed,
    Owner,
)


class FakeDriver:
    """Containers as dict entries; every call recorded; starts can be made to fail."""

    name = "fake"
    discovery: str | None = "unix:///run/theseus/agent.sock"

    def __init__(self) -> None:
        self.containers: dict[str, Observed] = {}  # handle -> state
        self.calls: list[tuple[str, str]] = []
        self.fail_start: str | None = None
        self.launches: dict[str, Launch] = {}
        self.gate: asyncio.Event | None = None  # when set, starts wait for it
        self.progress: list[str] = []  # told to each start's on_progress, as a pull would

    async def open(self, owner: Owner, on_exit: ExitCallback) -> None:
        return None

    async def close(self) -> None:
        return None

    async def list_tasks(self) -> list[Observed]:
        return list(self.containers.values())

    async def start(self, launch: Launch) -> str:
        self.calls.append(("start", launch.task_id))
        for text in self.progress:
            if launch.on_progress is not None:
                launch.on_progress(text)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_start:
            raise DriverError(self.fail_start)
        handle = f"c-{launch.task_id}"
        self.launches[launch.task_id] = launch
        self.containers[handle] = Observed(launch.task_id, handle, True)
        return handle

    async def stop(self, handle: str, grace: float) -> int | None:
        self.calls.append(("stop", handle))
        seen = self.containers[handle]
        self.containers[handle] = Observed(seen.task_id, handle, False, 0)
        return 0

    async def remove(self, handle: str) -> None:
        self.calls.append(("remove", handle))
        self.containers.pop(handle, None)

    async def logs(
        self, handle: str, follow: bool, tail: int | None, container: str | None = None
    ) -> AsyncIterator[bytes]:
        yield f"log of {handle}{'' if container is None else '/' + container}\n".encode()

    def die(self, task_id: str, code: int) -> ExitNotice:
        handle = f"c-{task_id}"
        self.containers[handle] = Observed(task_id, handle, False, code)
        return ExitNotice(task_id, handle, code)
