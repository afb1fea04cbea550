"""Pulling images for the docker driver: ``ImagePuller.ensure`` before a container is created.

Called by the docker driver (``theseus.agent.drivers.docker``) for a task's image, each pod
member's image and the pods' infrastructure image. What to pull and what a failure is called
are the pure rules of ``theseus.agent.drivers.pull_rules``; this module performs them:

* an image is looked up in the Engine first (``if_not_present``), and pulled only when it
  names a registry host, or with the agent's ``--pull-unqualified``;
* the pull is bounded in time, and its credentials are fetched (``Credentials``, from the
  server) only when a pull from that host starts, then handed to the Engine as the request's
  ``X-Registry-Auth``; they never reach a log line, an error or a report;
* several tasks that need one image at once share one pull (single flight per image name):
  each waiter gets its progress and the same result;
* progress (bytes downloaded of the total, ``PullProgress``) goes to every waiter's callback
  as Docker reports it; the runner throttles what it reports to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiodocker
from aiodocker.exceptions import DockerError

from theseus.agent.drivers import DEFAULT_PULL_TIMEOUT
from theseus.agent.drivers.base import DriverError
from theseus.agent.drivers.pull_rules import (
    PullProgress,
    RegistryAuth,
    not_pulled_message,
    pull_failure,
    refused,
    registry_host,
    should_pull,
    timed_out,
)

log = logging.getLogger(__name__)


ProgressCallback = Callable[[str], None]


class Logins(Protocol):
    """Where registry logins come from (the agent's ``RegistryLogins``)."""

    async def lookup(self, host: str) -> RegistryAuth | None:
        """The login stored for ``host``, or ``None``."""
        ...

    def forget(self, host: str) -> None:
        """Drop what is cached for ``host`` (the registry refused it)."""
        ...


@dataclass(frozen=True)
class PullOptions:
    """The agent's settings for pulls (``theseus agent --pull-timeout``,
    ``--pull-unqualified``); ``logins`` looks a registry's login up when needed."""

    timeout: float = DEFAULT_PULL_TIMEOUT
    allow_unqualified: bool = False
    logins: Logins | None = None


@dataclass
class _Flight:
    """One pull in progress, shared by every task that waits for its image."""

    listeners: list[ProgressCallback] = field(default_factory=list)
    last: str | None = None  # the latest progress text, for a waiter that joins late
    task: asyncio.Task[None] | None = None


class ImagePuller:
    def __init__(self, docker: aiodocker.Docker, options: PullOptions) -> None:
        self._docker = docker
        self._options = options
        self._flights: dict[str, _Flight] = {}
        self.pulls = 0  # pulls started (a test counts them: one per image, however many wait)

    async def ensure(
        self, image: str, policy: str, node: str, on_progress: ProgressCallback | None = None
    ) -> None:
        """Make sure ``image`` is present as ``policy`` says, pulling it if it must;
        ``DriverError`` with the reason a task shows when it cannot be."""
        present = await self._present(image)
        if should_pull(image, policy, present, self._options.allow_unqualified):
            await self._join(image, on_progress)
        elif not present:
            raise DriverError(not_pulled_message(image, node))

    async def _present(self, image: str) -> bool:
        try:
            await self._docker.images.inspect(image)
        except DockerError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _join(self, image: str, on_progress: ProgressCallback | None) -> None:
        flight = self._flights.get(image)
        if flight is None:
            flight = self._flights[image] = _Flight()
            flight.task = asyncio.create_task(self._pull(image, flight), name=f"pull-{image}")
            flight.task.add_done_callback(lambda task: self._landed(image, flight, task))
            self.pulls += 1
        assert flight.task is not None
        if on_progress is not None:
            flight.listeners.append(on_progress)
            if flight.last is not None:
                on_progress(flight.last)
        try:
            # Shielded: a waiter that goes away (its task stopped) does not end the pull of
            # the others.
            await asyncio.shield(flight.task)
        finally:
            with contextlib.suppress(ValueError):
                flight.listeners.remove(on_progress)  # type: ignore[arg-type]

    def _landed(self, image: str, flight: _Flight, task: asyncio.Task[None]) -> None:
        if self._flights.get(image) is flight:
            del self._flights[image]
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have gone

    async def _pull(self, image: str, flight: _Flight) -> None:
        host = registry_host(image)
        auth: RegistryAuth | None = None
        logins = self._options.logins
        if host is not None and logins is not None:
            auth = await logins.lookup(host)
        secrets = (auth.password,) if auth is not None else ()
        timeout = self._options.timeout
        progress = PullProgress()
        self._tell(flight, progress.text(image))
        log.info("pulling %s%s", image, " with stored credentials" if auth else "")
        try:
            async with asyncio.timeout(timeout):
                stream = self._docker.images.pull(
                    image, auth=auth.docker_auth() if auth else None, stream=True
                )
                async for event in stream:
                    if isinstance(event, dict) and progress.feed(event):
                        self._tell(flight, progress.text(image))
        except TimeoutError:
            raise DriverError(timed_out(image, timeout)) from None
        except DockerError as exc:
            reason = pull_failure(
                image,
                exc.status,
                str(exc.message),
                had_credentials=auth is not None,
                secrets=secrets,
            )
            log.warning("pull of %s failed: %s", image, reason)
            if host is not None and logins is not None and refused(reason):
                logins.forget(host)  # a login changed since: the next pull asks again
            raise DriverError(reason) from None  # Docker's own text is in the reason, scrubbed
        log.info("pulled %s", image)

    def _tell(self, flight: _Flight, text: str) -> None:
        flight.last = text
        for listener in list(flight.listeners):
            listener(text)

    async def close(self) -> None:
        """Cancel the pulls in progress (the agent is stopping)."""
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
