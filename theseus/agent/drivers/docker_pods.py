"""Pods on Docker: several containers run as one task, in one network namespace.

Called by the docker driver (``theseus.agent.drivers.docker``) for a ``Launch`` with
``members``; with ``docker``, the only modules of the agent that import aiodocker.

A pod is an infrastructure container (``theseus/busybox`` running a tiny pause loop, as
Kubernetes' pause container) that owns the network namespace and publishes the task's ports,
plus one container per member joined to it with ``NetworkMode: container:<infra id>``, so the
members reach each other on ``localhost``. All carry the task's labels; the infrastructure
container also lists the member names (``theseus.pod.members``), and each member names itself
(``theseus.pod.member``) and the infrastructure container (``theseus.pod.infra``). The task's
handle is the infrastructure container's id; ``pod_observed`` folds the containers of one task
into one ``Observed`` (running only while every member and the infrastructure container run).

The pure parts (``infra_config``, ``member_config``, ``pod_observed``, ``exit_message``) are
unit-tested; the rest performs them against the Engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aiodocker
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from theseus.agent.drivers.base import (
    DriverError,
    Launch,
    MemberLaunch,
    Observed,
    PortBinding,
)
from theseus.agent.drivers.docker_security import infra_privileges, pod_privileges
from theseus.images.labels import (
    LABEL_FENCE_AFTER,
    LABEL_MEMBER,
    LABEL_POD_INFRA,
    LABEL_POD_MEMBERS,
)
from theseus.images.tags import BUSYBOX_IMAGE
from theseus.model.logs import LogLimits

# The default infrastructure image, built locally (`theseus images build`); an agent may name
# another (``--pod-infra-image``), pulled like any image when it names a registry host.
INFRA_IMAGE = BUSYBOX_IMAGE
# PID 1 of the infrastructure container: sleeps until SIGTERM, then exits 0 at once (a shell
# without a trap would ignore SIGTERM as PID 1 and make every stop wait for the SIGKILL).
PAUSE_COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 86400 & wait $!; done"]
INFRA_MEM = 16  # MiB: a shell and a sleep
# The infrastructure container prints nothing; its log is bounded all the same.
INFRA_LOGS = LogLimits(max_bytes=1024 * 1024, max_files=1)


def is_pod_container(labels: dict[str, str]) -> bool:
    return LABEL_POD_MEMBERS in labels or LABEL_POD_INFRA in labels


def member_container_name(infra_name: str, member: str) -> str:
    """``theseus-web.1a2b-app``: task ids end in hex digits, so no other task's name clashes."""
    return f"{infra_name}-{member}"


def published_ports(
    ports: list[PortBinding], address: str
) -> tuple[dict[str, dict[str, object]], dict[str, list[dict[str, str]]]]:
    """``ExposedPorts`` and ``PortBindings`` for a container (or a pod's infrastructure
    container) that publishes ``ports`` at the node's ``address`` (pure)."""
    exposed: dict[str, dict[str, object]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in ports:
        key = f"{port.container_port}/tcp"
        exposed[key] = {}
        # Several names may share one container port: publish it at each of their host ports.
        bindings.setdefault(key, []).append({"HostIp": address, "HostPort": str(port.host_port)})
    return exposed, bindings


def infra_config(launch: Launch, address: str, image: str = INFRA_IMAGE) -> dict[str, Any]:
    """The ``containers/create`` body of a pod's infrastructure container (pure): it owns
    the namespace, so it publishes the task's ports (at ``address``, as single containers;
    nothing on the host's network)."""
    exposed, bindings = published_ports([] if launch.host_network else launch.ports, address)
    return {
        "Image": image,
        "Cmd": list(PAUSE_COMMAND),
        "Env": [f"{key}={value}" for key, value in launch.environment.items()],
        "Labels": {
            **launch.labels,
            LABEL_POD_MEMBERS: ",".join(member.name for member in launch.members),
        },
        "ExposedPorts": exposed,
        "HostConfig": {
            "Memory": INFRA_MEM * 1024 * 1024,
            "PortBindings": bindings,
            "Init": True,  # a stop right after the start must not wait for the trap
            "LogConfig": INFRA_LOGS.docker_log_config(),
            **infra_privileges(launch),
        },
    }


def member_config(
    launch: Launch,
    member: MemberLaunch,
    infra_id: str,
    extra_binds: Iterable[str] = (),
    log_limits: LogLimits | None = None,
) -> dict[str, Any]:
    """The ``containers/create`` body of one member (pure): in the infrastructure container's
    network namespace, so it publishes nothing itself (the Engine refuses ports there).
    ``extra_binds``: the node's discovery directory (``docker_config.discovery_bind``);
    ``log_limits``: the bound of its logs, resolved (the pod's ``logs`` over the agent's)."""
    # The member's own mount at a target (e.g. its own /run/theseus) wins over ours.
    targets = {v.split(":")[1].rstrip("/") for v in member.volumes if ":" in v}
    extra = [b for b in extra_binds if b.split(":")[1].rstrip("/") not in targets]
    config: dict[str, Any] = {
        "Image": member.image,
        "Env": [f"{key}={value}" for key, value in member.environment.items()],
        "Labels": {**launch.labels, LABEL_MEMBER: member.name, LABEL_POD_INFRA: infra_id},
        "HostConfig": {
            "NetworkMode": f"container:{infra_id}",
            "NanoCpus": int(member.cpus * 1e9),
            "Memory": int(member.mem * 1024 * 1024),
            "Binds": [*member.volumes, *extra],
            "Init": launch.init,
            "LogConfig": (log_limits or LogLimits()).docker_log_config(),
            **pod_privileges(launch),
        },
    }
    if member.command is not None:
        config["Cmd"] = ["/bin/sh", "-c", member.command]
    elif member.args is not None:
        config["Cmd"] = list(member.args)
    return config


# --- observation (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class PodContainer:
    """One container of a pod, as listed (and, when it is not running, inspected)."""

    id: str
    labels: dict[str, str]
    running: bool
    exit_code: int | None = None
    finished_at: str = ""  # RFC 3339 from the Engine; orders the exits
    created: float | None = None  # epoch seconds (the pod's start, for health grace periods)
    oom_killed: bool = False  # the kernel killed it for memory (Docker's State.OOMKilled)

    @property
    def member(self) -> str | None:
        """The member's name; ``None`` for the infrastructure container."""
        return self.labels.get(LABEL_MEMBER)

    @property
    def infra(self) -> str:
        """The id of the pod's infrastructure container (the task's handle)."""
        return self.id if self.member is None else self.labels.get(LABEL_POD_INFRA, "")


_RFC3339 = re.compile(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$")


def sortable_time(stamp: str) -> str:
    """An Engine time (RFC 3339, UTC, fractional digits trimmed: ``...:05.12Z``) as a string
    that sorts as the time does (nine digits: ``...:05.120000000Z``); unknown sorts last."""
    match = _RFC3339.match(stamp)
    if match is None:
        return "~"
    whole, fraction, zone = match.groups()
    return f"{whole}.{(fraction or '').ljust(9, '0')}{zone}"


def exit_message(member: str | None, exit_code: int | None, oom_killed: bool = False) -> str:
    who = "the pod's network container" if member is None else f"container '{member}'"
    if oom_killed:  # the same words as a lone container's OOM_MESSAGE, naming the member
        return f"{who} was killed for memory (OOM): it used more than its mem limit"
    if exit_code is None:
        return f"{who} exited"
    return f"{who} exited with code {exit_code}"


def pod_observed(task_id: str, containers: list[PodContainer]) -> Observed:
    """One task's pod containers folded into one ``Observed`` (pure). It runs only while its
    infrastructure container and every member it lists run; otherwise the first container
    to have stopped (or one that is gone) says why, with its exit code."""
    infra = next((c for c in containers if c.member is None), None)
    handle = infra.id if infra is not None else next((c.infra for c in containers), "")
    members = {c.member: c for c in containers if c.member is not None}
    expected = (infra.labels.get(LABEL_POD_MEMBERS) or "").split(",") if infra else []
    missing = [name for name in expected if name and name not in members]
    if infra is not None and infra.running and not missing:  # noqa: SIM102 (two questions)
        if all(c.running for c in members.values()):
            fence_after = infra.labels.get(LABEL_FENCE_AFTER)
            return Observed(
                task_id, handle, True, started_at=infra.created, fence_after=fence_after
            )
    stopped = [c for c in containers if not c.running]
    stopped.sort(key=lambda c: (sortable_time(c.finished_at), c.member is None))
    if stopped:
        first = stopped[0]
        message = exit_message(first.member, first.exit_code, first.oom_killed)
        return Observed(
            task_id, handle, False, first.exit_code, message=message, oom_killed=first.oom_killed
        )
    if infra is None:
        return Observed(task_id, handle, False, message="the pod's network container is gone")
    return Observed(task_id, handle, False, message=f"container '{missing[0]}' is gone")


def notice_of(
    attributes: dict[str, str], container_id: str, oom_killed: bool = False
) -> tuple[str, str]:
    """The task handle and the exit message for an Engine event of a pod's container
    (``oom_killed``: what inspecting the dead container said)."""
    member = attributes.get(LABEL_MEMBER)
    handle = container_id if member is None else attributes.get(LABEL_POD_INFRA, container_id)
    code = attributes.get("exitCode")
    exit_code = int(code) if code is not None and code.lstrip("-").isdigit() else None
    return handle, exit_message(member, exit_code, oom_killed)


# --- operations -------------------------------------------------------------------------------


async def members_of(docker: aiodocker.Docker, infra_id: str) -> list[DockerContainer]:
    """The member containers joined to ``infra_id`` (none: not a pod), in no set order."""
    return await docker.containers.list(
        all=True, filters={"label": [f"{LABEL_POD_INFRA}={infra_id}"]}
    )


def member_name(container: DockerContainer) -> str:
    """A listed member's name. (Reading logs re-inspects the container, which moves its
    labels under ``Config``: take names before, or from there.)"""
    try:
        labels = container["Labels"]
    except KeyError:
        labels = container["Config"]["Labels"]
    return str((labels or {}).get(LABEL_MEMBER, ""))


async def start_pod(
    docker: aiodocker.Docker,
    launch: Launch,
    name: str,
    address: str,
    node: str,
    extra_binds: list[str],
    infra_image: str = INFRA_IMAGE,
    log_limits: LogLimits | None = None,
) -> str:
    """Create the infrastructure container and every member, then start them all; the
    infrastructure container's id. On any failure, nothing is left behind. The images are
    present already (the driver pulled what it had to). ``log_limits``: each member's."""
    try:
        infra = await _create(docker, infra_config(launch, address, infra_image), name, pod=True)
    except DockerError as exc:
        if exc.status == 404:
            raise DriverError(
                f"the pod's network container needs image '{infra_image}', which is not "
                f"present on node {node}"
            ) from exc
        raise DriverError(f"could not create the pod's network container: {exc.message}") from exc
    try:
        try:
            await infra.start()
        except DockerError as exc:
            message = f"could not start the pod's network container: {exc.message}"
            raise DriverError(message) from exc
        members = [
            await _create_member(docker, launch, m, infra.id, name, node, extra_binds, log_limits)
            for m in launch.members
        ]
        results = await asyncio.gather(*(m.start() for m in members), return_exceptions=True)
        for member, result in zip(launch.members, results, strict=True):
            if isinstance(result, DockerError):
                raise DriverError(
                    f"could not start container '{member.name}': {result.message}"
                ) from result
            if isinstance(result, BaseException):
                raise result
    except BaseException:
        # E.g. the host port is taken: leave nothing behind, the server places a new task.
        await remove_pod(docker, infra.id)
        raise
    return infra.id


async def _create_member(
    docker: aiodocker.Docker,
    launch: Launch,
    member: MemberLaunch,
    infra_id: str,
    infra_name: str,
    node: str,
    extra_binds: list[str],
    log_limits: LogLimits | None,
) -> DockerContainer:
    config = member_config(launch, member, infra_id, extra_binds, log_limits)
    try:
        return await _create(docker, config, member_container_name(infra_name, member.name))
    except DockerError as exc:
        if exc.status == 404:
            raise DriverError(
                f"container '{member.name}': image '{member.image}' is not present on node {node}"
            ) from exc
        raise DriverError(f"could not create container '{member.name}': {exc.message}") from exc


async def _create(
    docker: aiodocker.Docker, config: dict[str, Any], name: str, pod: bool = False
) -> DockerContainer:
    try:
        return await docker.containers.create(config, name=name)
    except DockerError as exc:
        if exc.status != 409:
            raise
    # A leftover of an earlier attempt of this very task (the agent died mid-start): it never
    # ran as far as the server knows, so replace it (a pod's with its members).
    with contextlib.suppress(DockerError):
        old = await docker.containers.container(name).show()
        if pod:
            await remove_pod(docker, str(old["Id"]))
        else:
            await _delete(docker.containers.container(str(old["Id"])))
    return await docker.containers.create(config, name=name)


async def _delete(container: DockerContainer) -> None:
    try:
        await container.delete(force=True, v=True)
    except DockerError as exc:
        if exc.status not in (404, 409):  # 409: removal already in progress
            raise


async def _stop(container: DockerContainer, grace: float) -> None:
    try:
        await container.stop(t=math.ceil(grace))
    except DockerError as exc:
        if exc.status != 404:
            raise


async def stop_pod(
    docker: aiodocker.Docker, infra_id: str, members: list[DockerContainer], grace: float
) -> list[str]:
    """Stop every member in parallel (SIGTERM, SIGKILL after ``grace``), then the
    infrastructure container, which frees the ports; the members' ids."""
    await asyncio.gather(*(_stop(m, grace) for m in members))
    await _stop(docker.containers.container(infra_id), grace)
    return [m.id for m in members]


async def remove_pod(docker: aiodocker.Docker, infra_id: str) -> None:
    """Remove every member (in parallel), then the infrastructure container."""
    members = await members_of(docker, infra_id)
    await asyncio.gather(*(_delete(m) for m in members))
    await _delete(docker.containers.container(infra_id))


async def container_logs(
    container: DockerContainer, follow: bool, tail: int | None
) -> AsyncIterator[bytes]:
    """One container's stdout and stderr, as the Engine gives them."""
    params: dict[str, Any] = {"tail": "all" if tail is None else str(tail)}
    if follow:
        async for chunk in container.log(stdout=True, stderr=True, follow=True, **params):
            yield chunk.encode()
    else:
        lines = await container.log(stdout=True, stderr=True, follow=False, **params)
        for line in lines:
            yield line.encode()


async def pod_logs(
    members: list[DockerContainer], follow: bool, tail: int | None
) -> AsyncIterator[bytes]:
    """Every member's lines, each prefixed with ``<member> | ``. Without ``follow`` the lines
    are merged in time order (``tail``: the last N of the merge); following, they come in
    arrival order (the backlog of each member first, ``tail`` lines each)."""
    if not follow:
        stamped: list[tuple[str, str, str]] = []
        for member in members:
            name = member_name(member)
            lines = await member.log(
                stdout=True, stderr=True, timestamps=True, tail="all" if tail is None else str(tail)
            )
            for line in lines:
                stamp, _, text = line.partition(" ")
                stamped.append((stamp, name, text))
        stamped.sort(key=lambda item: sortable_time(item[0]))
        for _, name, text in stamped if tail is None else stamped[max(0, len(stamped) - tail) :]:
            yield f"{name} | {text}".encode()
        return
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)

    async def pump(member: DockerContainer) -> None:
        prefix, pending = member_name(member).encode() + b" | ", b""
        # A member removed mid-read (or any backend error) ends only its own stream;
        # cancellation, when the reader goes away, ends them all.
        with contextlib.suppress(Exception):
            async for chunk in container_logs(member, True, tail):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    await queue.put(prefix + line + b"\n")
        if pending:
            await queue.put(prefix + pending + b"\n")
        await queue.put(None)

    pumps = [asyncio.create_task(pump(member)) for member in members]
    try:
        remaining = len(pumps)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            else:
                yield item
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
