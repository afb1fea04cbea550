"""The agent's registry logins (``theseus.agent.registry_logins``): fetched from the server
when a pull needs one, reused briefly, asked again after a refusal; a server that cannot say
fails the pull with that reason, not with a misleading "no credentials"; one it cannot open
(sealed under another CA) with the server's own words."""

from __future__ import annotations

import pytest

from theseus.agent.drivers.base import DriverError
from theseus.agent.registry_logins import RegistryLogins
from theseus.api.access import RegistryLoginSecret
from theseus.api.client import ApiError


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.secret: RegistryLoginSecret | None = RegistryLoginSecret(
            host="r.example:5000", username="u", password="pw"
        )
        self.error: Exception | None = None

    async def registry_login(self, node: str, host: str) -> RegistryLoginSecret | None:
        self.calls.append((node, host))
        if self.error is not None:
            raise self.error
        return self.secret


def logins(client: FakeClient, cache: float = 10.0) -> RegistryLogins:
    found = RegistryLogins("n1", cache)
    found.bind(client)  # type: ignore[arg-type]
    return found


async def test_a_login_is_fetched_once_then_reused_until_forgotten() -> None:
    client = FakeClient()
    source = logins(client)
    auth = await source.lookup("r.example:5000")
    assert auth is not None and (auth.username, auth.password) == ("u", "pw")
    assert await source.lookup("r.example:5000") == auth
    assert client.calls == [("n1", "r.example:5000")]
    source.forget("r.example:5000")
    await source.lookup("r.example:5000")
    assert len(client.calls) == 2


async def test_without_a_cache_every_pull_asks_and_none_stored_is_none() -> None:
    client = FakeClient()
    client.secret = None
    source = logins(client, cache=0)
    assert await source.lookup("r.example:5000") is None
    assert await source.lookup("r.example:5000") is None
    assert len(client.calls) == 2


async def test_a_server_that_cannot_say_fails_the_pull_with_that_reason() -> None:
    client = FakeClient()
    client.error = ApiError(503, "the server is starting", [])
    with pytest.raises(DriverError, match="could not get the login of registry r.example:5000"):
        await logins(client).lookup("r.example:5000")


async def test_a_login_the_server_cannot_open_fails_the_pull_with_the_servers_words() -> None:
    client = FakeClient()
    words = (
        "the login for registry r.example:5000 cannot be read by this server (sealed with "
        "another cluster CA): run theseus registry-login r.example:5000 again"
    )
    client.error = ApiError(409, words, [])
    with pytest.raises(DriverError) as failed:
        await logins(client).lookup("r.example:5000")
    assert str(failed.value) == words  # the task's reason, as it is
