"""``SharedSpecs``: task records read from etcd made to share their group's spec object.

Every task record carries its group's whole spec (``TaskRecord.spec``). The tasks a reconcile
pass creates share one spec object, but records parsed from etcd each get a copy of their
own: a server that loads 50,000 tasks (a restarted server, a new leader, any other server of
the cluster) held 50,000 copies of a few hundred specs, 321 MiB against 86 MiB shared, and
parsing them took longer (34 against 21 µs a record, the collector's work included:
BENCHMARKS.md, issue 17, thirteenth session). It also lets the assignments' memo
(``theseus.server.wire``) encode a spec once for all the tasks that carry it.

``StateCache`` passes each task record it parses through ``share``. A spec is only ever
replaced by an equal one, so nothing a reader sees changes. Specs are kept by group and
version; one version may come with several specs (a scale changes ``instances``, which the
version leaves out), so a few are kept per version, the last seen first.
"""

from __future__ import annotations

from theseus.model.spec import GroupSpec
from theseus.model.tasks import TaskRecord

SPECS_PER_VERSION = 4  # a version's specs kept: scales of the group since it was deployed
MAX_VERSIONS = 20_000  # all forgotten past this (gone groups and versions): kept again as read


class SharedSpecs:
    def __init__(self) -> None:
        self._by_version: dict[tuple[str, str], list[GroupSpec]] = {}

    def share(self, task: TaskRecord) -> TaskRecord:
        """``task``, or a copy of it that holds an equal spec already kept."""
        key = (task.group_key.key, task.version)
        kept = self._by_version.get(key)
        if kept is None:
            if len(self._by_version) >= MAX_VERSIONS:
                self._by_version.clear()
            self._by_version[key] = [task.spec]
            return task
        for index, spec in enumerate(kept):
            if spec is task.spec:
                return task
            if spec == task.spec:
                if index:
                    kept.insert(0, kept.pop(index))
                return task.model_copy(update={"spec": spec})
        kept.insert(0, task.spec)
        del kept[SPECS_PER_VERSION:]
        return task

    def clear(self) -> None:
        self._by_version.clear()
