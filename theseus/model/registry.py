"""The service registry's layout in etcd, and how an entry is derived from a task (pure).

The registry keeps the original Theseus's shape, in JSON, under ``/services/``::

    /services/<service>/<labels JSON>/config                     the group's spec
    /services/<service>/<labels JSON>/containers/<task id>/info  one running container

``<labels JSON>`` is the group's sorted label list as compact JSON (``["dev","frontend"]``;
``[]`` for no labels), so any printable label round-trips. The full description, with
examples for etcdctl, is in ``docs/registry.md``. Entries are derived by the leader from
task state (``theseus.reconciler.registry``); nobody else writes them.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from theseus.model.groups import GroupKey, GroupRecord
from theseus.model.nodes import NodeRecord
from theseus.model.tasks import TaskRecord

PREFIX = "/services/"


def encode(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces, UTF-8), so that an unchanged entry compares
    equal byte for byte.

    orjson rather than ``json.dumps``: the leader encodes an entry for every task that turns
    running, and ``json.dumps`` was a fifth of the passes that did it (4.3 µs an entry, 0.4
    with orjson and the copy below; passes over 22,000 such tasks took 0.41-0.42 s instead of
    0.46-0.51). The bytes are ``json.dumps``'s (``sort_keys``, compact separators,
    ``ensure_ascii=False``) for every string, integer, list and object, so entries written
    before stay equal; a float under 1e-4 is written as a decimal (``0.00001``, where
    ``json.dumps`` wrote ``1e-05``), which only a config entry could hold.

    Copied once made: orjson's bytes keep the 4 KiB it allocated to write them, and the
    leader holds every entry (its memo and its view of the registry), 50,000 at 50,000
    tasks: 80 MiB more of the server's peak RSS (bench/scale.py) before the copy.
    """
    return memoryview(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).tobytes()


def group_prefix(group: GroupKey) -> str:
    return f"{PREFIX}{group.service}/{group.label_key}/"


def config_key(group: GroupKey) -> str:
    return group_prefix(group) + "config"


def container_key(group: GroupKey, task_id: str) -> str:
    return f"{group_prefix(group)}containers/{task_id}/info"


def parse_key(key: str) -> tuple[GroupKey, str | None] | None:
    """``(group, task id or None for the config)``, or None if the key is not an entry."""
    if not key.startswith(PREFIX):
        return None
    service, _, rest = key.removeprefix(PREFIX).partition("/")
    try:
        labels, end = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        return None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        return None
    group = GroupKey.of(service, labels)
    tail = rest[end:]
    if tail == "/config":
        return group, None
    if tail.startswith("/containers/") and tail.endswith("/info"):
        task_id = tail.removeprefix("/containers/").removesuffix("/info")
        if task_id and "/" not in task_id:
            return group, task_id
    return None


def service_of(key: str) -> str | None:
    if not key.startswith(PREFIX):
        return None
    return key.removeprefix(PREFIX).partition("/")[0] or None


def config_value(group: GroupRecord) -> dict[str, Any]:
    """The group's spec as deployed (every key, defaults included)."""
    return group.spec.model_dump(mode="json")


def container_value(task: TaskRecord, node: NodeRecord) -> dict[str, Any]:
    """The original's info dict, in JSON: external ``[host ip, "port/tcp"]`` and exposed
    ``"port/tcp"`` as the original wrote them, plus plain ints for new code."""
    port_mapping = {
        name: {
            "external": [node.address, f"{task.host_ports[name]}/tcp"],
            "exposed": f"{container_port}/tcp",
            "host_port": task.host_ports[name],
            "container_port": container_port,
        }
        for name, container_port in task.spec.ports.items()
        if name in task.host_ports
    }
    return {
        "service_name": task.service,
        "instance_name": task.id,
        "instance_host": node.address,
        "labels": list(task.labels),
        "node": node.name,
        "port_mapping": port_mapping,
    }
