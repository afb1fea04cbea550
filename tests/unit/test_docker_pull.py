"""``ImagePuller`` against a fake Engine: present images are not pulled (``if_not_present``),
``always`` pulls, an image without a registry host is pulled only when the agent allows it,
several waiters share one pull and its progress, the credentials of the image's registry go
with the pull, Docker's errors and the time bound become the task's reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiodocker.exceptions import DockerError

from tests.kit.wait import wait_until_async
from theseus.agent.drivers.base import DriverError
from theseus.agent.drivers.docker_pull import ImagePuller, PullOptions
from theseus.agent.drivers.pull_rules import RegistryAuth

IMAGE = "r.example:5000/app:1"


class FakeImages:
    def __init__(self, present: set[str]) -> None:
        self.present = present
        self.pulls: list[tuple[str, Any]] = []
        self.gate: asyncio.Event | None = None
        self.error: DockerError | None = None
        detail = {"current": 1_000_000, "total": 2_000_000}
        self.events: list[dict[str, Any]] = [
            {"status": "Downloading", "id": "l1", "progressDetail": detail},
            {"status": "Download complete", "id": "l1"},
        ]

    async def inspect(self, name: str) -> dict[str, Any]:
        if name not in self.present:
            raise DockerError(404, {"message": f"No such image: {name}"})
        return {"Id": name}

    def pull(self, name: str, *, auth: Any = None, stream: bool = False) -> AsyncIterator[Any]:
        self.pulls.append((name, auth))
        return self._stream(name)

    async def _stream(self, name: str) -> AsyncIterator[Any]:
        for event in self.events:
            yield event
            if self.gate is not None:
                await self.gate.wait()
        if self.error is not None:
            raise self.error
        self.present.add(name)


class FakeDocker:
    def __init__(self, present: set[str] | None = None) -> None:
        self.images = FakeImages(present or set())


def puller(docker: FakeDocker, **options: Any) -> ImagePuller:
    return ImagePuller(docker, PullOptions(**options))  # type: ignore[arg-type]


async def test_present_images_are_not_pulled_unless_always() -> None:
    docker = FakeDocker({IMAGE})
    await puller(docker).ensure(IMAGE, "if_not_present", "n1")
    assert docker.images.pulls == []
    await puller(docker).ensure(IMAGE, "always", "n1")
    assert [name for name, _ in docker.images.pulls] == [IMAGE]


async def test_an_image_without_registry_is_pulled_only_when_allowed() -> None:
    docker = FakeDocker()
    with pytest.raises(DriverError, match="names no registry host, so it is not pulled"):
        await puller(docker).ensure("theseus/app:1", "always", "n1")
    assert docker.images.pulls == []
    await puller(docker, allow_unqualified=True).ensure("theseus/app:1", "if_not_present", "n1")
    assert docker.images.pulls == [("theseus/app:1", None)]


async def test_waiters_share_one_pull_and_its_progress() -> None:
    docker = FakeDocker()
    docker.images.gate = asyncio.Event()
    pulls = puller(docker)
    seen: dict[str, list[str]] = {"a": [], "b": []}
    waiters = [
        asyncio.create_task(pulls.ensure(IMAGE, "if_not_present", "n1", seen[k].append))
        for k in seen
    ]
    await wait_until_async(lambda: seen["a"] and seen["b"], 2.0, "both waiters told")
    docker.images.gate.set()
    await asyncio.gather(*waiters)
    assert pulls.pulls == 1 and len(docker.images.pulls) == 1
    assert seen["a"][-1] == seen["b"][-1] == f"pulling {IMAGE}: 2.0 of 2.0 MB"


async def test_a_waiter_that_goes_does_not_end_the_others_pull() -> None:
    docker = FakeDocker()
    docker.images.gate = asyncio.Event()
    pulls = puller(docker)
    first = asyncio.create_task(pulls.ensure(IMAGE, "if_not_present", "n1"))
    second = asyncio.create_task(pulls.ensure(IMAGE, "if_not_present", "n1"))
    await wait_until_async(lambda: docker.images.pulls, 2.0, "the pull started")
    first.cancel()
    docker.images.gate.set()
    await second
    assert IMAGE in docker.images.present


class Logins:
    """The agent's registry logins, as the puller sees them."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.asked: list[str] = []
        self.forgotten: list[str] = []

    async def lookup(self, host: str) -> RegistryAuth | None:
        self.asked.append(host)
        return RegistryAuth("theseus", self.password)

    def forget(self, host: str) -> None:
        self.forgotten.append(host)


async def test_the_registrys_credentials_go_with_the_pull() -> None:
    docker, logins = FakeDocker(), Logins("pw")
    await puller(docker, logins=logins).ensure(IMAGE, "if_not_present", "n1")
    assert logins.asked == ["r.example:5000"] and logins.forgotten == []
    assert docker.images.pulls == [(IMAGE, {"username": "theseus", "password": "pw"})]


async def test_a_refused_pull_names_the_registry_and_never_the_password() -> None:
    docker, logins = FakeDocker(), Logins("pw-123456")
    docker.images.error = DockerError(500, {"message": "unauthorized: pw-123456 is wrong"})
    with pytest.raises(DriverError) as failed:
        await puller(docker, logins=logins).ensure(IMAGE, "if_not_present", "n1")
    assert str(failed.value) == f"registry r.example:5000 refused the credentials for {IMAGE}"
    assert logins.forgotten == ["r.example:5000"]  # the next pull asks the server again
    docker.images.error = DockerError(404, {"message": "manifest unknown"})
    with pytest.raises(DriverError, match="image not found in registry r.example:5000"):
        await puller(docker).ensure(IMAGE, "if_not_present", "n1")


async def test_a_pull_is_bounded_in_time() -> None:
    docker = FakeDocker()
    docker.images.gate = asyncio.Event()  # never set: the pull hangs
    with pytest.raises(DriverError, match=r"pull of .* timed out after 0.05 s"):
        await puller(docker, timeout=0.05).ensure(IMAGE, "if_not_present", "n1")
