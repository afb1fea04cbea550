"""The ``process`` driver: tasks as plain child processes, for machines without Docker.

Called by the task runner through the ``TaskDriver`` protocol. The spec's ``command`` runs
under ``/bin/sh -c`` (``args`` are exec'd as is), in a session of its own so that a stop
signals the whole process group; the image is ignored. stdout and stderr go to
``<state dir>/logs/<task id>.log``. An exit is noticed by awaiting the child. Tasks reach the
node's discovery endpoint at its host path (``THESEUS_DISCOVERY=unix://<state dir>/discovery/
agent.sock``).

Limitation (documented, by design): processes are not adopted across agent restarts. A
restarted agent does not know the processes of its previous run; they are left alone (never
killed blindly by name), and the server replaces their tasks as it would any lost ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from theseus.agent.drivers.base import (
    DISCOVERY_SOCKET,
    DriverError,
    ExitCallback,
    ExitNotice,
    Launch,
    Observed,
    Owner,
    StatsTarget,
    discovery_dir,
    exit_code_of_returncode,
)

# Variables a shell command needs to find its tools; the rest of the agent's environment is
# not leaked into tasks.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER")
_FOLLOW_POLL = 0.1  # seconds between reads of a followed log file


@dataclass
class _Child:
    task_id: str
    process: asyncio.subprocess.Process
    log_path: Path
    environment: dict[str, str]
    exit_code: int | None = None


class ProcessDriver:
    name = "process"

    def __init__(self, state_dir: Path) -> None:
        self._log_dir = state_dir / "logs"
        self.discovery: str | None = (
            f"unix://{discovery_dir(state_dir.absolute()) / DISCOVERY_SOCKET}"
        )
        self._children: dict[str, _Child] = {}  # handle -> child
        self._waiters: set[asyncio.Task[None]] = set()
        self._on_exit: ExitCallback = lambda notice: None

    async def open(self, owner: Owner, on_exit: ExitCallback) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._on_exit = on_exit

    async def close(self) -> None:
        for waiter in self._waiters:
            waiter.cancel()
        await asyncio.gather(*self._waiters, return_exceptions=True)

    async def list_tasks(self) -> list[Observed]:
        return [
            Observed(child.task_id, handle, child.exit_code is None, child.exit_code)
            for handle, child in self._children.items()
        ]

    async def start(self, launch: Launch) -> str:
        if launch.is_pod:
            # Members need one shared network namespace and their own images: containers.
            raise DriverError("pods need the docker driver (this node runs the process driver)")
        if launch.command is not None:
            argv = ["/bin/sh", "-c", launch.command]
        elif launch.args:
            argv = list(launch.args)
        else:
            raise DriverError("the process driver needs the spec's 'command' or 'args'")
        env = {key: os.environ[key] for key in _INHERITED if key in os.environ}
        env.update(launch.environment)
        log_path = self._log_dir / f"{launch.task_id}.log"
        try:
            with log_path.open("ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own process group: stop reaches children
                )
        except OSError as exc:
            raise DriverError(f"could not start the process: {exc}") from exc
        handle = f"pid-{process.pid}-{launch.task_id}"  # a pid alone may be reused
        child = _Child(launch.task_id, process, log_path, env)
        self._children[handle] = child
        waiter = asyncio.create_task(self._wait(handle, child), name=f"wait-{handle}")
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)
        return handle

    async def stats_targets(self, handle: str) -> list[StatsTarget]:
        """Its process group (``start_new_session``: the leader's pid is the group's id),
        measured from ``/proc``: a process task has no cgroup of its own."""
        child = self._children.get(handle)
        if child is None or child.exit_code is not None:
            return []
        return [StatsTarget("", child.process.pid, tree=True, network=False)]

    async def _wait(self, handle: str, child: _Child) -> None:
        returncode = await child.process.wait()
        child.exit_code = exit_code_of_returncode(returncode)
        self._on_exit(ExitNotice(child.task_id, handle, child.exit_code))

    async def stop(self, handle: str, grace: float) -> int | None:
        child = self._children.get(handle)
        if child is None:
            return None
        process = child.process
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await process.wait()
            except TimeoutError:
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
            # The group may outlive its leader (a backgrounded child): make sure it is gone.
            # Only right after the leader's death, before its group id can be reused.
            _signal_group(process.pid, signal.SIGKILL)
        returncode = await process.wait()
        return exit_code_of_returncode(returncode)

    async def exec(
        self, handle: str, command: str, timeout: float, container: str | None = None
    ) -> tuple[int, str]:
        """``sh -c command`` beside the task, in the task's environment."""
        child = self._children.get(handle)
        if child is None:
            raise DriverError(f"no process {handle} on this node")
        if container is not None:
            raise DriverError(f"pod member {container!r}: the process driver runs no pods")
        try:
            process = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=child.environment,
                start_new_session=True,
            )
        except OSError as exc:
            raise DriverError(f"could not run the command: {exc}") from exc
        try:
            async with asyncio.timeout(timeout):
                output, _ = await process.communicate()
        finally:
            if process.returncode is None:  # timed out or cancelled: leave nothing behind
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        assert process.returncode is not None
        return exit_code_of_returncode(process.returncode), output.decode(errors="replace")

    async def remove(self, handle: str) -> None:
        child = self._children.pop(handle, None)
        if child is None:
            return
        if child.process.returncode is None:
            _signal_group(child.process.pid, signal.SIGKILL)
            await child.process.wait()
        child.log_path.unlink(missing_ok=True)

    async def logs(
        self, handle: str, follow: bool, tail: int | None, container: str | None = None
    ) -> AsyncIterator[bytes]:
        child = self._children.get(handle)
        if child is None:
            return
        if container is not None:
            raise DriverError(
                f"task {child.task_id} is not a pod: it has no container {container!r}"
            )
        with child.log_path.open("rb") as log_file:
            lines = log_file.readlines()
            for line in lines if tail is None else lines[-tail:] if tail > 0 else []:
                yield line
            while follow:
                chunk = log_file.read()
                if chunk:
                    yield chunk
                elif child.process.returncode is not None:
                    return
                else:
                    await asyncio.sleep(_FOLLOW_POLL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
