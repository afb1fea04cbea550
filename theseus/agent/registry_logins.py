"""The agent's view of the cluster's image-registry logins: fetched from the server only when a
pull from that registry starts, kept in memory for ``CACHE_SECONDS``, never written anywhere.

Created by ``theseus.agent.agent.run_agent``; its ``lookup`` is the docker driver's
``PullOptions.credentials`` (``theseus.agent.drivers.docker_pull``). The agent binds its server
client once it has one (``bind``). The password lives in ``RegistryAuth``, whose ``repr``
hides it; nothing here logs it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from theseus.agent.drivers.base import DriverError
from theseus.agent.drivers.pull_rules import RegistryAuth
from theseus.api.client import ApiError, ServerUnreachable

if TYPE_CHECKING:  # the agent's client (aiohttp) is not loaded for ``CACHE_SECONDS``
    from theseus.api.agent_client import AsyncServerClient

# Briefly: a login changed with `theseus registry-login` is used by the next pull after this
# (at once when the registry refused the old one). ``theseus agent --registry-login-cache``.
CACHE_SECONDS = 10.0


class RegistryLogins:
    def __init__(self, node: str, cache_seconds: float = CACHE_SECONDS) -> None:
        self._node = node
        self._cache_seconds = cache_seconds
        self._client: AsyncServerClient | None = None
        self._cache: dict[str, tuple[float, RegistryAuth | None]] = {}  # host -> (until, auth)

    def bind(self, client: AsyncServerClient) -> None:
        self._client = client

    async def lookup(self, host: str) -> RegistryAuth | None:
        """The login stored for ``host``, or ``None``; ``DriverError`` when the server cannot
        say (the pull would otherwise fail with a misleading "no credentials")."""
        now = time.monotonic()
        cached = self._cache.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        if self._client is None:
            return None
        try:
            secret = await self._client.registry_login(self._node, host)
        except ApiError as exc:
            if exc.status == 409:
                # The server has the login but cannot open it (sealed with another cluster
                # CA): its message says what to do, and is the task's reason as it is.
                raise DriverError(exc.message) from None
            raise DriverError(
                f"could not get the login of registry {host} from the server: {exc}"
            ) from None
        except ServerUnreachable as exc:
            raise DriverError(
                f"could not get the login of registry {host} from the server: {exc}"
            ) from None
        auth = None if secret is None else RegistryAuth(secret.username, secret.password)
        if self._cache_seconds > 0:
            self._cache[host] = (now + self._cache_seconds, auth)
        return auth

    def forget(self, host: str) -> None:
        self._cache.pop(host, None)
