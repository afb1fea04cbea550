"""Which of the docker driver's handles are pods, known without asking the Docker Engine.

Owned by the docker driver (``theseus.agent.drivers.docker``), which asks before every stop,
removal, exec and log read: a pod needs its members found and handled too, a single container
needs nothing more (and no Engine call to find that out).

A task's handle is its container's id, and a pod's is its infrastructure container's id, as in
every earlier version. The handle stays that bare id because the runner reports it as the
task's ``container_id``: the API shows it, docs/pods.md says it is that container's id, and the
server keeps a task's health verdict across an agent restart only while it stays the same. So
the driver remembers what each of its handles is rather than marking it:

* a container or pod it starts is known at once;
* a listing (``list_tasks``) tells pods from single containers by the labels on them
  (``theseus.images.labels``), which every version has written. That is how a restarted agent,
  upgraded or not, learns what it re-adopts: the runner only ever holds handles that ``start``
  returned or a listing reported, and it adopts containers by listing them;
* a handle it removes is forgotten, and so is one a listing no longer finds (removed behind the
  agent's back, or of a cluster id the node no longer has: the runner drops those handles too),
  unless it was started while the listing was under way.

A handle the driver has never seen (a task's ``container_id`` from the server, passed by a tool
or a test) is unknown: the driver then looks for its members once and remembers the answer.
"""

from __future__ import annotations

from collections.abc import Mapping


class KnownHandles:
    """The driver's handles, each a pod or a single container."""

    def __init__(self) -> None:
        self._is_pod: dict[str, bool] = {}

    def is_pod(self, handle: str) -> bool | None:
        """Whether ``handle`` is a pod; ``None`` when it is not known."""
        return self._is_pod.get(handle)

    def learn(self, handle: str, is_pod: bool) -> None:
        self._is_pod[handle] = is_pod

    def forget(self, handle: str) -> None:
        self._is_pod.pop(handle, None)

    def before_listing(self) -> frozenset[str]:
        """The handles known as a listing begins; hand them to ``listed`` when it ends."""
        return frozenset(self._is_pod)

    def listed(self, found: Mapping[str, bool], known_before: frozenset[str]) -> None:
        """The handles one listing found (handle: is a pod). Of those known before it began,
        the ones it did not find are gone; one started meanwhile may be missing from it and
        is kept."""
        for handle in known_before.difference(found):
            self._is_pod.pop(handle, None)
        self._is_pod.update(found)
