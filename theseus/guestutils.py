"""Service discovery for code running inside a Theseus container (maestro-ng ``guestutils``).

A drop-in for ``maestro.guestutils`` (and for the original Theseus's ``guestutils.py``): the
same names, signatures, return types and error messages, so start scripts written for maestro-ng
run unchanged. It needs nothing but the Python standard library; images copy this file (and
``watcher.py``) next to their start script and ``import guestutils`` or
``from guestutils import *``. Inside the Theseus package it is ``theseus.guestutils``.

Where the data comes from: the container's own values come from the variables the agent injects
(``SERVICE_NAME``, ``CONTAINER_NAME``, ``CONTAINER_HOST_ADDRESS``, maestro's self variables
``<SVC>_<CTR>_<PORT>_INTERNAL_PORT``...). Everything about *other* containers comes live from the
service registry, through the discovery endpoint of the agent on the same node:
``THESEUS_DISCOVERY`` is ``unix:///run/theseus/agent.sock`` (HTTP over a unix socket, the
default when the variable is unset) or ``http://host:port``. ``GET /v1/registry/<service>``
answers every labeled group of the service with its registered containers; every call reads it
afresh (no cache), so the answers follow scale-ups, failures and rolling updates.

Deviations from the original Theseus guestutils (its bugs fixed, see the seed report 3.2 #23-24):

* ports are ``int`` (as in maestro), not strings;
* ``get_node_list`` honours ``minimum`` (raises ``MaestroEnvironmentError``, as maestro does);
  the original ignored it;
* a missing port without a default raises ``MaestroEnvironmentError``; a given default is
  passed through ``int()`` (``'42'`` gives ``42``); the original returned the literal string
  ``'default'`` (or ``'default_port'``), and ``get_node_list`` appended ``:default``;
* ``get_specific_*`` and ``get_port`` work for groups with two or more labels (the original
  rebuilt the etcd group key with spaces and missed them); containers are found in any group;
* ``get_node_list`` orders nodes by instance name (as maestro), not by etcd listing order, and
  an error is raised rather than printed ("failed") with the group silently skipped;
* ``get_environment_name`` reads ``MAESTRO_ENVIRONMENT_NAME`` with maestro's default
  ``'local'`` (the original always returned ``'default'``; Theseus injects ``default``);
* ``get_port`` reads this container's own maestro variable, so it works before the container
  is registered (the original queried etcd);
* the registry is read through the node agent (JSON over HTTP), not from etcd with python-etcd
  and ``ast.literal_eval``; no ``ETCD_HOST_ADDRESS``, no ``etcd_driver.py``;
* ``decode_marathon_id``, ``test_all`` and ``small_test`` are gone (Theseus ids are opaque).

Deviations from maestro-ng:

* peers come from the live registry, not from the link variables (``<SVC>_INSTANCES``,
  ``<SVC>_<CTR>_HOST``, ``<SVC>_<CTR>_<PORT>_PORT``) frozen when the container started;
  ``get_specific_host``/``get_specific_port``/``get_specific_exposed_port`` therefore work for
  any registered container of any service, not only peers and declared dependencies;
* ``get_node_list`` takes ``labels`` (a group is included when its labels contain all of them)
  and its ``ports`` defaults to ``None`` instead of a shared mutable ``[]``;
* ``get_container_internal_address`` uses the standard library instead of ``netifaces``/eth0
  (the address the container's hostname resolves to, else the source address towards the node);
* an unreachable agent or an error answer raises ``DiscoveryError``, a subclass of
  ``MaestroEnvironmentError``.

Extra helpers for Theseus users (not exported by ``*``): ``get_registry``, ``watch_registry``,
``get_labels``, ``DiscoveryError``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "MaestroEnvironmentError",
    "get_container_host_address",
    "get_container_internal_address",
    "get_container_name",
    "get_environment_name",
    "get_node_list",
    "get_port",
    "get_service_name",
    "get_specific_exposed_port",
    "get_specific_host",
    "get_specific_port",
    "update_os_env",
]

DEFAULT_DISCOVERY = "unix:///run/theseus/agent.sock"
LOOKUP_TIMEOUT = 5.0  # seconds, for a registry lookup
WATCH_GRACE = 10.0  # seconds a watch may take beyond its ``wait``


class MaestroEnvironmentError(Exception):
    """A value the container needs is not defined (maestro-ng's exception)."""


class DiscoveryError(MaestroEnvironmentError):
    """The discovery endpoint could not be reached or answered an error (``status`` if HTTP)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --- this container (environment) -------------------------------------------------------------


def update_os_env(env_vars: dict[str, str] | None = None) -> None:
    """Add ``env_vars`` to ``os.environ`` (maestro's helper for ``envfrom: stdin`` scripts)."""
    os.environ.update(env_vars or {})


def get_environment_name() -> str:
    """The environment's name: ``MAESTRO_ENVIRONMENT_NAME``, ``'local'`` when unset."""
    return os.environ.get("MAESTRO_ENVIRONMENT_NAME", "local")


def get_service_name() -> str:
    """This container's service (``SERVICE_NAME``)."""
    name = os.environ.get("SERVICE_NAME", "")
    if not name:
        raise MaestroEnvironmentError("Service name was not defined")
    return name


def get_container_name() -> str:
    """This container's name (``CONTAINER_NAME``; in Theseus the task id)."""
    name = os.environ.get("CONTAINER_NAME", "")
    if not name:
        raise MaestroEnvironmentError("Container name was not defined")
    return name


def get_labels() -> list[str]:
    """This container's group labels (the ``LABELS`` JSON list; ``[]`` when unset)."""
    raw = os.environ.get("LABELS", "")
    try:
        labels = json.loads(raw) if raw else []
    except ValueError:
        labels = None
    if not isinstance(labels, list):
        raise MaestroEnvironmentError(f"LABELS is not a JSON list: {raw!r}")
    return [str(label) for label in labels]


def get_container_host_address(as_ip_address: bool = False) -> str:
    """The address of the node this container runs on (``CONTAINER_HOST_ADDRESS``).

    With ``as_ip_address`` the value is resolved with ``socket.gethostbyname`` first (errors
    propagate); as in maestro the emptiness check comes after, so an empty value gives
    ``'0.0.0.0'`` there instead of raising.
    """
    address = os.environ.get("CONTAINER_HOST_ADDRESS", "")
    if as_ip_address:
        address = socket.gethostbyname(address)
    if not address:
        raise MaestroEnvironmentError("Container host address was not defined")
    return address


def get_container_internal_address() -> str:
    """This container's own IP address (IPv4 when it has one).

    The address its hostname resolves to (Docker writes it to ``/etc/hosts``); when that is a
    loopback address or does not resolve, the source address the kernel picks for a UDP socket
    "connected" (no packet is sent) to ``CONTAINER_HOST_ADDRESS``.
    """
    resolved = ""
    with contextlib.suppress(OSError):
        resolved = socket.gethostbyname(socket.gethostname())
    if resolved and not resolved.startswith("127."):
        return resolved
    with contextlib.suppress(OSError):
        target = os.environ.get("CONTAINER_HOST_ADDRESS", "")
        for family, kind, proto, _, sockaddr in socket.getaddrinfo(
            target, 9, type=socket.SOCK_DGRAM
        ):
            with socket.socket(family, kind, proto) as probe:
                probe.connect(sockaddr)
                source = str(probe.getsockname()[0])
            if source not in ("0.0.0.0", "::"):
                return source
    if resolved:
        return resolved
    raise MaestroEnvironmentError("Container internal address could not be determined")


def get_port(name: str, default: Any = None) -> int:
    """This container's exposed (in-container) port ``name``, or ``int(default)``.

    Read from the container's own maestro variable ``<SVC>_<CTR>_<NAME>_INTERNAL_PORT``, so it
    works before the container is registered and without the agent.
    """
    service, container = get_service_name(), get_container_name()
    variable = f"{_env_name(service)}_{_env_name(container)}_{_env_name(name)}_INTERNAL_PORT"
    return _as_port(
        os.environ.get(variable, default),
        f"No internal port {name} defined for container {container} of service {service}",
    )


# --- other containers (the registry) ----------------------------------------------------------


def get_specific_host(service: str, container: str) -> str:
    """The node address of ``container`` (an instance name, i.e. task id) of ``service``."""
    entry = _find_container(service, container)
    if entry is None or not entry.get("instance_host"):
        raise MaestroEnvironmentError(
            f"No host defined for container {container} of service {service}"
        )
    return str(entry["instance_host"])


def get_specific_port(service: str, container: str, port: str, default: Any = None) -> int:
    """The external (host) port ``port`` of ``container`` of ``service``, or ``int(default)``."""
    entry = _find_container(service, container)
    value = default if entry is None else _mapped_port(entry, port, "host_port", default)
    return _as_port(value, f"No port {port} defined for container {container} of service {service}")


def get_specific_exposed_port(service: str, container: str, port: str, default: Any = None) -> int:
    """The exposed (container) port ``port`` of ``container`` of ``service``, or ``int(default)``.

    The port inside the container (``5000``), whatever host port it is published on.
    """
    entry = _find_container(service, container)
    value = default if entry is None else _mapped_port(entry, port, "container_port", default)
    return _as_port(
        value, f"No internal port {port} defined for container {container} of service {service}"
    )


def get_node_list(
    service: str,
    ports: Iterable[str] | None = None,
    minimum: int = 1,
    labels: Iterable[str] | None = None,
) -> list[str]:
    """``['host[:port1[:port2...]]', ...]`` for every registered container of ``service``.

    The ports are external (host) ports, in the order of ``ports``; an unknown port name raises.
    With ``labels``, only groups whose labels include all of them count (``['dev']`` matches
    the groups ``['dev']`` and ``['dev', 'frontend']``). A single string is accepted for
    ``ports`` or ``labels``. Sorted by instance name. Fewer than ``minimum`` nodes raises.
    """
    port_names = [ports] if isinstance(ports, str) else list(ports or [])
    wanted = {labels} if isinstance(labels, str) else set(labels or [])
    entries = [
        entry
        for group in _groups(get_registry(service))
        if wanted <= set(group.get("labels") or [])
        for entry in group.get("containers") or []
    ]
    entries.sort(key=lambda entry: str(entry.get("instance_name", "")))
    nodes = []
    for entry in entries:
        name = str(entry.get("instance_name", ""))
        parts = [str(entry.get("instance_host", ""))]
        for port in port_names:
            message = f"No port {port} defined for container {name} of service {service}"
            parts.append(str(_as_port(_mapped_port(entry, port, "host_port", None), message)))
        nodes.append(":".join(parts))
    if len(nodes) < minimum:
        raise MaestroEnvironmentError(f"No or not enough {service} nodes configured")
    return nodes


def get_registry(service: str) -> dict[str, Any]:
    """The registry's raw answer for ``service``: ``{"service", "index", "groups": [...]}``."""
    answer = discovery_get(f"/v1/registry/{urllib.parse.quote(service, safe='')}")
    if not isinstance(answer, dict) or not isinstance(answer.get("groups"), list):
        raise DiscoveryError(f"unexpected registry answer for {service!r}: {answer!r}"[:300])
    return answer


def watch_registry(
    services: list[str],
    index: int = 0,
    wait: float = 30.0,
    on_connection: Callable[[http.client.HTTPConnection | None], None] | None = None,
) -> dict[str, Any]:
    """One long-poll: ``{"index": M, "services": {service: [instance names]}}``.

    Answers when one of ``services`` changes after ``index`` (at once for ``index=0``), else
    after ``wait`` seconds. ``on_connection`` sees the connection while it is open (to abort it).
    """
    query = urllib.parse.urlencode(
        {"services": ",".join(services), "index": str(index), "wait": f"{wait:g}"}, safe=","
    )
    answer = discovery_get(
        f"/v1/registry/watch?{query}", wait + WATCH_GRACE, on_connection=on_connection
    )
    if (
        not isinstance(answer, dict)
        or not isinstance(answer.get("index"), int)
        or not isinstance(answer.get("services"), dict)
    ):
        raise DiscoveryError(f"unexpected watch answer: {answer!r}"[:300])
    return answer


# --- the discovery endpoint -------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix stream socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _connection(address: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to ``address`` and the path prefix to put before request paths."""
    if address.startswith("unix://"):
        return _UnixHTTPConnection(address[len("unix://") :], timeout), ""
    parts = urllib.parse.urlsplit(address)
    if parts.scheme != "http" or not parts.hostname:
        raise DiscoveryError(
            f"THESEUS_DISCOVERY must be unix://<path> or http://host:port: {address!r}"
        )
    return (
        http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout),
        parts.path.rstrip("/"),
    )


def discovery_get(
    path: str,
    timeout: float = LOOKUP_TIMEOUT,
    on_connection: Callable[[http.client.HTTPConnection | None], None] | None = None,
) -> Any:
    """``GET path`` on the discovery endpoint, decoded JSON; any failure is a ``DiscoveryError``."""
    address = os.environ.get("THESEUS_DISCOVERY", "") or DEFAULT_DISCOVERY
    conn, prefix = _connection(address, timeout)
    try:
        conn.connect()
        if on_connection is not None:  # connected: the caller may now shut the socket down
            on_connection(conn)
        conn.request("GET", prefix + path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        status, body = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise DiscoveryError(f"discovery endpoint {address}: {exc or type(exc).__name__}") from exc
    finally:
        if on_connection is not None:
            on_connection(None)
        conn.close()
    try:
        answer = json.loads(body) if body else None
    except ValueError:
        answer = None
    if status >= 400:
        message = (
            answer.get("message") or answer.get("detail") if isinstance(answer, dict) else None
        )
        text = message or body.decode("utf-8", "replace").strip()[:200]
        raise DiscoveryError(f"discovery endpoint {address}: GET {path}: {status} {text}", status)
    if answer is None:
        raise DiscoveryError(f"discovery endpoint {address}: GET {path}: not JSON", status)
    return answer


# --- helpers ----------------------------------------------------------------------------------


def _env_name(name: str) -> str:
    """maestro's transliteration of a name into a variable name (``zk-node.1`` → ``ZK_NODE_1``)."""
    return re.sub(r"[^\w]", "_", name).upper()


def _as_port(value: Any, message: str) -> int:
    """``int(value)`` or ``MaestroEnvironmentError(message)`` (maestro's ``int(... default)``)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MaestroEnvironmentError(message) from None


def _groups(registry: dict[str, Any]) -> list[dict[str, Any]]:
    return [group for group in registry.get("groups") or [] if isinstance(group, dict)]


def _find_container(service: str, container: str) -> dict[str, Any] | None:
    for group in _groups(get_registry(service)):
        for entry in group.get("containers") or []:
            if isinstance(entry, dict) and entry.get("instance_name") == container:
                return entry
    return None


def _mapped_port(entry: dict[str, Any], port: str, field: str, default: Any) -> Any:
    """``port_mapping[port][field]`` of a registry entry (older ``"31001/tcp"`` shapes too)."""
    mapping = (entry.get("port_mapping") or {}).get(port)
    if not isinstance(mapping, dict):
        return default
    if mapping.get(field) is not None:
        return mapping[field]
    legacy = mapping.get("external") if field == "host_port" else mapping.get("exposed")
    if isinstance(legacy, (list, tuple)) and len(legacy) == 2:
        legacy = legacy[1]
    if isinstance(legacy, str):
        return legacy.split("/", 1)[0]
    return default
