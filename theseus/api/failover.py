"""Which server to ask next: the failover order of a client given several server addresses.

Pure (no I/O): ``theseus.api.client`` asks ``ServerList.attempts()`` for the order in which to
try the servers for one call, reports each address that failed or worked, and the list keeps
the client on the last server that answered. Unit-tested directly.
"""

from __future__ import annotations

from collections.abc import Sequence


def parse_addresses(addresses: str | Sequence[str]) -> list[str]:
    """``"http://a:5000,http://b:5001"`` or a list of such strings → distinct addresses, in
    order, without trailing slashes; a bare ``host:port`` gets ``http://``."""
    items = [addresses] if isinstance(addresses, str) else list(addresses)
    parsed: list[str] = []
    for item in items:
        for part in item.split(","):
            address = part.strip().rstrip("/")
            if not address:
                continue
            if "://" not in address:
                address = "http://" + address
            if address not in parsed:
                parsed.append(address)
    if not parsed:
        raise ValueError(f"no server address in {addresses!r}")
    return parsed


class ServerList:
    """The servers of one client and the one it currently talks to.

    Calls run concurrently (an agent's heartbeat, long-poll and reports), so a failure only
    moves the client on if it happened on the current server: ten calls failing on the same
    dead server move it one step, not ten.
    """

    def __init__(self, addresses: str | Sequence[str]) -> None:
        self.addresses = parse_addresses(addresses)
        self._current = 0

    @property
    def current(self) -> str:
        return self.addresses[self._current]

    def attempts(self) -> list[str]:
        """Every address once, starting with the current one."""
        n = len(self.addresses)
        return [self.addresses[(self._current + i) % n] for i in range(n)]

    def failed(self, address: str) -> None:
        if address == self.current:
            self._current = (self._current + 1) % len(self.addresses)

    def worked(self, address: str) -> None:
        self._current = self.addresses.index(address)

    def __str__(self) -> str:
        return ",".join(self.addresses)
