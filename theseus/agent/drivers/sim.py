"""The ``sim`` driver: tasks that only pretend to run, so that one process can drive
thousands of hollow nodes (benchmarks, scheduler tests).

Called by the task runner through the ``TaskDriver`` protocol. A start is "running" at once, a
stop is "stopped" at once, and logs are one synthetic line. Cheap by construction: one dict
entry per task, no threads, timers or tasks; simulated tasks never exit by themselves. A pod is
one simulated task, like any other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from theseus.agent.drivers.base import ExitCallback, Launch, Observed, Owner
from theseus.images.labels import LABEL_FENCE_AFTER


class SimDriver:
    name = "sim"
    discovery: str | None = None  # simulated tasks look nothing up

    def __init__(self) -> None:
        self._owner = Owner(node="", address="")
        self._tasks: dict[str, str] = {}  # handle -> task id
        self._fence_after: dict[str, str | None] = {}  # handle -> its label, as Docker's keep

    async def open(self, owner: Owner, on_exit: ExitCallback) -> None:
        self._owner = owner

    async def close(self) -> None:
        return None

    async def list_tasks(self) -> list[Observed]:
        return [
            Observed(task_id, handle, True, fence_after=self._fence_after.get(handle))
            for handle, task_id in self._tasks.items()
        ]

    async def start(self, launch: Launch) -> str:
        handle = f"sim-{launch.task_id}"
        self._tasks[handle] = launch.task_id
        self._fence_after[handle] = launch.labels.get(LABEL_FENCE_AFTER)
        return handle

    async def stop(self, handle: str, grace: float) -> int | None:
        return 0 if handle in self._tasks else None

    async def exec(
        self, handle: str, command: str, timeout: float, container: str | None = None
    ) -> tuple[int, str]:
        return 0, ""  # simulated tasks pass every COMMAND check

    async def remove(self, handle: str) -> None:
        self._tasks.pop(handle, None)
        self._fence_after.pop(handle, None)

    async def logs(
        self, handle: str, follow: bool, tail: int | None, container: str | None = None
    ) -> AsyncIterator[bytes]:
        task_id = self._tasks.get(handle)
        if task_id is not None and tail != 0:
            of = "" if container is None else f"container {container} of "
            yield f"simulated {of}task {task_id} on node {self._owner.node}\n".encode()
