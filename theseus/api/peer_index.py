"""The index an agent's report asks of the server it goes to (pure; no I/O).

A server decides a report on its own view of the cluster (``theseus.server.writes``): a
report of a task its view does not have yet is dropped as the report of a task that is gone,
and one that changes nothing against the task's status there is not written. Each server's
view follows etcd a little behind, under load seconds behind, so two servers' views differ.
While an agent talks to one server that does not matter: the server's view holds everything
it answered the agent, and the statuses it wrote itself (``Writer._status_of``). It does when
the agent moves to another server (failover), which may not have applied yet:

* the task the agent learned from the first server's assignments: the report that says it
  runs, or that it is healthy, would be dropped, and the agent never reports again what did
  not change (a checked task then runs, but never enters the registry);
* the status the first server wrote from the agent's last report: measured against the
  older one, the next report may look like no change, and not be written.

So the agent keeps, for each server, the highest index its answers carried (the revision a
report's statuses were written at, or the server's view's), and a report asks the server it
goes to for the highest of the *other* servers' (``X-Theseus-Index``;
``theseus.server.client_index``): that server answers once its view has applied it, or 503
and the agent moves on. The server's own index is left out so that an agent that stays with
one server never waits for that server's view to apply its own writes (at 5,000 nodes that
took seconds, BENCHMARKS.md, issue 17). Kept by ``theseus.api.agent_client``.
"""

from __future__ import annotations


class PeerIndexes:
    def __init__(self) -> None:
        self._seen: dict[str, int] = {}  # server address -> the highest index it answered

    def answered(self, address: str, index: int) -> None:
        """``address`` answered with ``index`` (0: none)."""
        if index > self._seen.get(address, 0):
            self._seen[address] = index

    def asked_of(self, address: str) -> int | None:
        """The index a report sent to ``address`` asks for; None: nothing to ask."""
        others = [index for server, index in self._seen.items() if server != address]
        highest = max(others, default=0)
        return highest or None

    def forget(self) -> None:
        """Forget every index: the agent registers again, maybe with a cluster whose etcd
        starts its revisions afresh (a restored or recreated one), whose servers would never
        reach the old ones."""
        self._seen.clear()
