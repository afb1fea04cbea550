"""How the docker driver hears that its containers started or died: the Engine's event stream.

Owned by the docker driver (``theseus.agent.drivers.docker``), which runs
``ContainerEvents.watch`` as a task from ``open`` to ``close`` and hands each ``ExitNotice``
to the runner's callback. ``exit_state`` (how a container ended, read from the Engine) is
shared with the driver's listing and ``stop``.

The stream carries the ``start`` and ``die`` events of this node's containers; it is
resubscribed with capped backoff when it breaks (the runner's periodic resync is the safety net
for anything missed meanwhile). A ``die`` event does not say whether the kernel killed the
container for memory, so a death is reported once the dead container's state is read; any
container of a pod speaks for its task, naming itself (``docker_pods.notice_of``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from theseus.agent.drivers import docker_pods as pods
from theseus.agent.drivers.base import OOM_MESSAGE, ExitCallback, ExitNotice, Owner
from theseus.agent.drivers.docker_config import node_filters
from theseus.images.labels import LABEL_CLUSTER, LABEL_TASK

log = logging.getLogger(__name__)


async def exit_state(docker: aiodocker.Docker, handle: str) -> tuple[int | None, str, bool]:
    """The exit code, the time of the exit (RFC 3339, "" if unknown) and whether the
    kernel killed it for memory (Docker's ``State.OOMKilled``)."""
    try:
        info = await docker.containers.container(handle).show()
    except DockerError:
        return None, "", False
    state = info.get("State") or {}
    # A container created but never started reports 0: that is not an exit code.
    if not state.get("StartedAt") or state["StartedAt"].startswith("0001-"):
        return None, "", False
    code = state.get("ExitCode")
    finished = str(state.get("FinishedAt") or "")
    return (int(code) if code is not None else None), finished, bool(state.get("OOMKilled"))


class ContainerEvents:
    """The ``start`` and ``die`` events of ``owner``'s containers, as ``on_exit`` notices."""

    def __init__(self, docker: aiodocker.Docker, owner: Owner, on_exit: ExitCallback) -> None:
        self._docker = docker
        self._owner = owner
        self._on_exit = on_exit
        self._deaths: set[asyncio.Task[None]] = set()  # dead containers being inspected

    async def watch(self) -> None:
        """Follow the stream until cancelled, resubscribing whenever it ends."""
        # Filter on the node only: the cluster id can change at re-registration, so it is
        # checked per event instead of being baked into the subscription.
        filters = {
            "type": ["container"],
            "event": ["die", "start"],
            **node_filters(self._owner, with_cluster=False),
        }
        delay = 0.2
        while True:
            events = self._docker.events
            subscriber = events.subscribe(filters=filters)  # type: ignore[no-untyped-call]
            try:
                while (event := await subscriber.get()) is not None:
                    delay = 0.2
                    self._on_event(event)
            finally:
                # Lets the next subscribe() start a fresh stream; re-raises the stream's own
                # error (daemon restarting, connection refused), which only means "retry".
                with contextlib.suppress(Exception):
                    await events.stop()  # type: ignore[no-untyped-call]
            log.warning("the Docker event stream ended; resubscribing in %.1fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_event(self, event: dict[str, Any]) -> None:
        actor = event.get("Actor") or {}
        attributes: dict[str, str] = actor.get("Attributes") or {}
        task_id = attributes.get(LABEL_TASK)
        if task_id is None or attributes.get(LABEL_CLUSTER) != self._owner.cluster_id:
            return
        code = attributes.get("exitCode")
        handle = str(actor.get("ID") or event.get("id") or "")
        exit_code = int(code) if code is not None and code.lstrip("-").isdigit() else None
        if (event.get("Action") or event.get("status")) == "start":
            if pods.is_pod_container(attributes):  # the pod's handle: its network container
                handle, _ = pods.notice_of(attributes, handle)
            self._on_exit(ExitNotice(task_id, handle, None, started=True))
            return
        death = asyncio.create_task(
            self._notice_death(task_id, handle, exit_code, attributes), name="docker-death"
        )
        self._deaths.add(death)  # a reference, so that it is not collected mid-flight
        death.add_done_callback(self._deaths.discard)

    async def _notice_death(
        self, task_id: str, container_id: str, exit_code: int | None, attributes: dict[str, str]
    ) -> None:
        """A container died: say so once its state is read, so that an OOM kill (which the
        ``die`` event does not tell) is reported as one. A pod's member speaks for its task
        (whose handle is the pod's network container) and names itself."""
        try:
            _, _, oom = await exit_state(self._docker, container_id)
        except Exception:  # the Engine went away: the plain notice still stands
            log.exception("inspecting dead container %s", container_id)
            oom = False
        handle, message = container_id, OOM_MESSAGE if oom else None
        if pods.is_pod_container(attributes):
            handle, message = pods.notice_of(attributes, container_id, oom)
        notice = ExitNotice(task_id, handle, exit_code, message=message, oom_killed=oom)
        self._on_exit(notice)
