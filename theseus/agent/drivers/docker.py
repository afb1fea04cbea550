"""The ``docker`` driver: tasks as Docker Engine containers, through aiodocker.

Called by the task runner (``theseus.agent.runner``) through the ``TaskDriver`` protocol. With
``docker_pods``, ``docker_pull`` and ``docker_events``, the only modules of the agent that
import aiodocker. Thin by design: it maps a ``Launch`` onto the Engine API (the bodies it
sends are built, pure, by ``docker_config``) and reports what the Engine says. Before creating
a container it makes sure its image is there (``docker_pull``): an image that names a registry
host is pulled when the node lacks it (``pull: if_not_present``) or at every start
(``always``), with the cluster's stored credentials for that host; an image without a
registry host is pulled only when the agent allows it (``--pull-unqualified``), so an offline
machine never reaches for Docker Hub and a missing local build is reported, not fetched.

Every container gets the node's discovery directory bind-mounted read-only at
``/run/theseus`` (connecting to a unix socket needs no write access to the mount), so that
``THESEUS_DISCOVERY=unix:///run/theseus/agent.sock`` reaches this node's agent.

A ``Launch`` with ``members`` is a pod: ``docker_pods`` owns how it is started, observed,
stopped, removed and read; this module dispatches to it by handle (a pod's handle is its
infrastructure container's id, which its members name in a label). Which handles are pods is
known without asking the Engine (``docker_handles``).

Exits are noticed from the Engine's event stream (``docker_events``: ``die`` events of this
node's containers), resubscribed with capped backoff when the stream breaks; the runner's
periodic resync is the safety net for anything missed meanwhile.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from theseus.agent.drivers import docker_pods as pods
from theseus.agent.drivers.base import (
    DISCOVERY_MOUNT,
    DISCOVERY_SOCKET,
    OOM_MESSAGE,
    DriverError,
    ExitCallback,
    Launch,
    Observed,
    Owner,
    StatsTarget,
)
from theseus.agent.drivers.docker_config import (
    container_config,
    discovery_bind,
    exec_argv,
    node_filters,
)
from theseus.agent.drivers.docker_events import ContainerEvents, exit_state
from theseus.agent.drivers.docker_handles import KnownHandles
from theseus.agent.drivers.docker_pull import ImagePuller, PullOptions
from theseus.images.labels import LABEL_FENCE_AFTER, LABEL_POD_MEMBERS, LABEL_TASK
from theseus.model.logs import LogLimits

CONTAINER_PREFIX = "theseus-"
EXEC_OUTPUT_KEPT = 4096  # bytes of a health-check command's output kept (its tail)


async def docker_answers(timeout: float = 2.0) -> bool:
    """Whether a Docker Engine answers here (the agent's default driver depends on it)."""
    try:
        async with asyncio.timeout(timeout), aiodocker.Docker() as docker:
            await docker.version()
    except Exception:  # no socket, no permission, no answer: all mean "no Docker"
        return False
    return True


class DockerDriver:
    name = "docker"

    def __init__(
        self,
        discovery_dir: Path | None = None,
        pull: PullOptions | None = None,
        infra_image: str = pods.INFRA_IMAGE,
        log_limits: LogLimits | None = None,
    ) -> None:
        """``discovery_dir``: the host directory of the agent's discovery socket, mounted
        into every container (``None``: no discovery endpoint for the containers);
        ``pull``: how images are pulled; ``infra_image``: the pods' network container's
        image (``--pod-infra-image``), pulled as any other when it names a registry;
        ``log_limits``: the bound of each container's logs where the spec sets none."""
        self._discovery_dir = discovery_dir
        self._log_limits = log_limits or LogLimits()
        self._pull_options = pull or PullOptions()
        self._infra_image = infra_image
        self._puller: ImagePuller | None = None
        self.discovery = (
            None if discovery_dir is None else f"unix://{DISCOVERY_MOUNT}/{DISCOVERY_SOCKET}"
        )
        self._docker: aiodocker.Docker | None = None
        self._owner = Owner(node="", address="")
        self._events: ContainerEvents | None = None  # holds its deaths' inspecting tasks
        self._watching: asyncio.Task[None] | None = None
        self._handles = KnownHandles()  # which are pods: learnt at start and listing

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            raise RuntimeError("DockerDriver.open() was not called")
        return self._docker

    async def open(self, owner: Owner, on_exit: ExitCallback) -> None:
        self._owner = owner
        if self._discovery_dir is not None:  # else the Engine would create it, owned by root
            self._discovery_dir.mkdir(parents=True, exist_ok=True)
        self._docker = aiodocker.Docker()
        await self._docker.version()  # fail now, clearly, if the Engine does not answer
        self._events = ContainerEvents(self._docker, owner, on_exit)
        self._watching = asyncio.create_task(self._events.watch(), name="docker-events")

    @property
    def puller(self) -> ImagePuller:
        if self._puller is None:
            self._puller = ImagePuller(self.docker, self._pull_options)
        return self._puller

    async def close(self) -> None:
        if self._puller is not None:
            await self._puller.close()
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
        if self._docker is not None:
            await self._docker.close()
            self._docker = None
        self._puller = None

    async def list_tasks(self) -> list[Observed]:
        known_before = self._handles.before_listing()
        containers = await self.docker.containers.list(all=True, filters=node_filters(self._owner))
        observed: list[Observed] = []
        in_pods: dict[str, list[pods.PodContainer]] = {}
        for container in containers:
            labels: dict[str, str] = container["Labels"] or {}
            task_id = labels.get(LABEL_TASK)
            if task_id is None:
                continue
            running = container["State"] in ("running", "paused", "restarting")
            code, finished, oom = (
                (None, "", False) if running else await exit_state(self.docker, container.id)
            )
            created = container["Created"]  # epoch seconds; started right after creation
            started_at = float(created) if isinstance(created, int | float) else None
            if pods.is_pod_container(labels):
                pod = pods.PodContainer(
                    container.id, labels, running, code, finished, started_at, oom
                )
                in_pods.setdefault(task_id, []).append(pod)
                continue
            fence_after = labels.get(LABEL_FENCE_AFTER)
            observed.append(
                Observed(
                    task_id,
                    container.id,
                    running,
                    code,
                    started_at=started_at,
                    fence_after=fence_after,
                    message=OOM_MESSAGE if oom else None,
                    oom_killed=oom,
                )
            )
        pod_tasks = [pods.pod_observed(t, members) for t, members in in_pods.items()]
        # What each handle is, so that stop, remove, logs and exec need not ask the Engine.
        found = {o.handle: False for o in observed} | {o.handle: True for o in pod_tasks}
        self._handles.listed(found, known_before)
        return observed + pod_tasks

    async def _exit_code(self, handle: str) -> int | None:
        return (await exit_state(self.docker, handle))[0]

    async def _ensure_images(self, launch: Launch) -> None:
        """Pull what the task needs, one image after the other (a pod's infrastructure
        image first: without it no member starts)."""
        wanted = [(launch.image, launch.pull, "")]
        if launch.is_pod:
            wanted = [(self._infra_image, "if_not_present", "the pod's network container: ")]
            wanted += [(m.image, m.pull, f"container '{m.name}': ") for m in launch.members]
        # Each image once, "always" if any of its uses says so; a failure names its first use.
        policies: dict[str, tuple[str, str]] = {}
        for image, policy, who in wanted:
            first = policies.get(image)
            if first is None or (policy == "always" and first[0] != "always"):
                policies[image] = (policy, first[1] if first else who)
        for image, (policy, who) in policies.items():
            try:
                await self.puller.ensure(image, policy, self._owner.node, launch.on_progress)
            except DriverError as exc:
                raise DriverError(f"{who}{exc}") from None

    async def start(self, launch: Launch) -> str:
        name = CONTAINER_PREFIX + launch.task_id
        await self._ensure_images(launch)
        if launch.is_pod:
            binds = discovery_bind(self._discovery_dir, [])
            node = self._owner.node
            handle = await pods.start_pod(
                self.docker,
                launch,
                name,
                self._owner.address,
                node,
                binds,
                self._infra_image,
                self._log_limits.over(launch.logs),
            )
            self._handles.learn(handle, is_pod=True)
            return handle
        config = container_config(
            launch, self._owner.address, self._discovery_dir, self._log_limits
        )
        try:
            container = await self._create(config, name)
        except DockerError as exc:
            if exc.status == 404:  # removed between the check and the create
                raise DriverError(
                    f"image '{launch.image}' is not present on node {self._owner.node}"
                ) from exc
            raise DriverError(f"could not create the container: {exc.message}") from exc
        self._handles.learn(container.id, is_pod=False)
        try:
            await container.start()
        except DockerError as exc:
            # E.g. the host port is taken: leave nothing behind, the server places a new task.
            await self.remove(container.id)
            raise DriverError(f"could not start the container: {exc.message}") from exc
        return container.id

    async def _create(self, config: dict[str, Any], name: str) -> DockerContainer:
        try:
            return await self.docker.containers.create(config, name=name)
        except DockerError as exc:
            if exc.status != 409:
                raise
        # A leftover of an earlier attempt of this very task (e.g. the agent died between
        # create and report): it never ran as far as the server knows, so replace it.
        await self.remove(name)
        return await self.docker.containers.create(config, name=name)

    async def _is_pod(self, handle: str) -> bool:
        """Known without asking the Engine for every handle the driver started or listed."""
        is_pod = self._handles.is_pod(handle)
        if is_pod is None:  # never seen here (e.g. a container_id from the server): ask once
            is_pod = bool(await pods.members_of(self.docker, handle))
            self._handles.learn(handle, is_pod)
        return is_pod

    async def _members(self, handle: str) -> list[DockerContainer]:
        """A pod's member containers, in no set order; none for a single container."""
        if not await self._is_pod(handle):
            return []
        return await pods.members_of(self.docker, handle)

    async def stats_targets(self, handle: str) -> list[StatsTarget]:
        """The main process of the container, or of each running member of a pod (the
        first one also stands for the pod's network namespace); one inspect each, which
        the stats collector does once per container, not at every reading."""
        members = await self._members(handle)
        named = [(pods.member_name(m), m.id) for m in members] if members else [("", handle)]
        targets: list[StatsTarget] = []
        for name, container_id in sorted(named):
            try:
                state = (await self.docker.containers.get(container_id))["State"]
            except DockerError:
                continue  # removed meanwhile
            pid = int(state.get("Pid") or 0)
            if state.get("Running") and pid > 0:
                targets.append(StatsTarget(name, pid, network=not targets))
        return targets

    async def stop(self, handle: str, grace: float) -> int | None:
        members = await self._members(handle)
        if members:
            stopped = await pods.stop_pod(self.docker, handle, members, grace)
            codes = [await self._exit_code(member) for member in stopped]
            # The pod's code: the first member that failed, else 0 (None if none is known).
            return next((c for c in codes if c), None if None in codes else 0)
        container = self.docker.containers.container(handle)
        try:
            await container.stop(t=math.ceil(grace))
        except DockerError as exc:
            if exc.status != 404:
                raise
            return None
        return await self._exit_code(handle)

    async def remove(self, handle: str) -> None:
        if await self._is_pod(handle):
            await pods.remove_pod(self.docker, handle)
        else:
            try:
                await self.docker.containers.container(handle).delete(force=True, v=True)
            except DockerError as exc:
                if exc.status not in (404, 409):  # 409: removal already in progress
                    raise
        self._handles.forget(handle)

    async def logs(
        self, handle: str, follow: bool, tail: int | None, container: str | None = None
    ) -> AsyncIterator[bytes]:
        members = await self._members(handle)
        if members and container is None:
            async for chunk in pods.pod_logs(members, follow, tail):
                yield chunk
            return
        target = self.docker.containers.container(handle)
        if container is not None:
            target = await self._member(handle, members, container)
        async for chunk in pods.container_logs(target, follow, tail):
            yield chunk

    async def _member(
        self, handle: str, members: list[DockerContainer], name: str | None
    ) -> DockerContainer:
        """The member ``name`` of the pod ``handle`` (``None``: its first member)."""
        if not members:
            raise DriverError(f"container {handle[:12]} is not a pod: it has no container {name!r}")
        infra = await self.docker.containers.container(handle).show()
        order = (infra["Config"]["Labels"] or {}).get(LABEL_POD_MEMBERS, "").split(",")
        by_name = {pods.member_name(m): m for m in members}
        if name is None:
            name = next((n for n in order if n in by_name), pods.member_name(members[0]))
        if name not in by_name:
            raise DriverError(
                f"the pod has no container {name!r} (its containers: {', '.join(order)})"
            )
        return by_name[name]

    async def exec(
        self, handle: str, command: str, timeout: float, container: str | None = None
    ) -> tuple[int, str]:
        """Run ``command`` (``/bin/sh -c``) in the task's container (a pod's member
        ``container``, by default its first): exit code and output. ``TimeoutError`` after
        ``timeout`` seconds; ``DriverError`` for an unknown member."""
        members = await self._members(handle)
        target = handle
        if members or container is not None:
            target = (await self._member(handle, members, container)).id
        return await self._exec_in(target, command, timeout)

    async def _exec_in(self, target: str, command: str, timeout: float) -> tuple[int, str]:
        output = bytearray()
        try:
            # The wrapper kills the command at its deadline where the image can; this bounds
            # the wait where it cannot (the command then runs on, as Docker cannot kill it).
            async with asyncio.timeout(timeout + 1):
                execution = await self.docker.containers.container(target).exec(
                    exec_argv(command, timeout), stdout=True, stderr=True
                )
                async with execution.start(detach=False) as stream:
                    while (message := await stream.read_out()) is not None:
                        output += message.data
                        del output[:-EXEC_OUTPUT_KEPT]
                info = await execution.inspect()
        except DockerError as exc:
            raise DriverError(f"docker exec: {exc.message}") from exc
        code = info.get("ExitCode")
        return (code if isinstance(code, int) else -1), output.decode(errors="replace")
