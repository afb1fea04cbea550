"""The ``process`` driver: tasks as plain child processes, for machines without Docker.

Called by the task runner through the ``TaskDriver`` protocol. The spec's ``command`` runs
under ``/bin/sh -c`` (``args`` are exec'd as is), in a session of its own so that a stop
signals the whole process group; the image is ignored. stdout and stderr go to
``<state dir>/logs/<task id>.log``. An exit is noticed by awaiting the child. Tasks reach the
node's discovery endpoint at its host path (``THESEUS_DISCOVERY=unix://<state dir>/discovery/
agent.sock``).

Limitation (documented, by design): processes are not adopted across agent restarts. A
restarted agent does not know the processes of its previous run; they are left alone (never
killed blindly by name), and the server replaces their tasks as it would any lost ones. Their
output went through the agent that is gone: it is lost, and a write to the broken pipe ends
a process that does not handle SIGPIPE; the new agent deletes the old run's log files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from theseus.agent.drivers import process_logs
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
from theseus.model.logs import LogLimits

logger = logging.getLogger(__name__)

# Variables a shell command needs to find its tools; the rest of the agent's environment is
# not leaked into tasks.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER")
# How long an exit notice waits for the child's last output to be written (a background
# grandchild may hold the pipe open much longer: its output is still written meanwhile).
_DRAIN_WAIT = 2.0


@dataclass
class _Child:
    task_id: str
    process: asyncio.subprocess.Process
    log_path: Path
    environment: dict[str, str]
    log: process_logs.RotatingLog
    pump: asyncio.Task[None]
    exit_code: int | None = None

    @property
    def output_done(self) -> bool:
        """Nothing more will be written to its log."""
        return self.pump.done()


class ProcessDriver:
    name = "process"

    def __init__(self, state_dir: Path, log_limits: LogLimits | None = None) -> None:
        """``log_limits``: the bound of each task's logs where its spec sets none."""
        self._log_dir = state_dir / "logs"
        self._log_limits = log_limits or LogLimits()
        self.discovery: str | None = (
            f"unix://{discovery_dir(state_dir.absolute()) / DISCOVERY_SOCKET}"
        )
        self._children: dict[str, _Child] = {}  # handle -> child
        self._waiters: set[asyncio.Task[None]] = set()
        self._on_exit: ExitCallback = lambda notice: None

    async def open(self, owner: Owner, on_exit: ExitCallback) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        # A previous run's files: their tasks are not adopted (the server replaced them) and
        # no one can read them through the agent any more; restarts must not pile them up.
        for leftover in self._log_dir.iterdir():
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
        self._on_exit = on_exit

    async def close(self) -> None:
        pumps = [child.pump for child in self._children.values()]
        for task in [*self._waiters, *pumps]:
            task.cancel()
        await asyncio.gather(*self._waiters, *pumps, return_exceptions=True)

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
        limits = self._log_limits.over(launch.logs)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stop reaches children
            )
        except OSError as exc:
            raise DriverError(f"could not start the process: {exc}") from exc
        handle = f"pid-{process.pid}-{launch.task_id}"  # a pid alone may be reused
        log = process_logs.RotatingLog(log_path, limits)
        assert process.stdout is not None
        pump = asyncio.create_task(_pump(process.stdout, log), name=f"log-{handle}")
        child = _Child(launch.task_id, process, log_path, env, log, pump)
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
        # Its last lines are in the log before anyone hears of the exit (``wait`` neither
        # raises nor cancels the pump).
        await asyncio.wait({child.pump}, timeout=_DRAIN_WAIT)
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
        child.pump.cancel()
        await asyncio.gather(child.pump, return_exceptions=True)
        process_logs.remove_log(child.log_path, child.log.limits.max_files)

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
        stream = process_logs.read_log(
            child.log_path,
            child.log.limits.max_files,
            follow,
            tail,
            lambda: child.output_done or self._children.get(handle) is not child,
        )
        async for chunk in stream:
            yield chunk


async def _pump(output: asyncio.StreamReader, log: process_logs.RotatingLog) -> None:
    """The child's output into its log, until the pipe closes (the child and whatever it
    started that holds the pipe have exited), then the file is closed."""
    failed = False
    try:
        while chunk := await output.read(process_logs.READ_CHUNK):
            if failed:
                continue  # drained all the same: a child must never block on a full pipe
            try:
                log.write(chunk)
            except OSError as exc:  # e.g. the disk is full: the output is lost, said once
                failed = True
                logger.warning("task output not written to %s: %s", log.path, exc)
    finally:
        log.close()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
