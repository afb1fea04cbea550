"""The node's discovery endpoint: what containers on this node use to find their peers.

The agent serves ``discovery_app`` on a unix socket, ``<state dir>/discovery/agent.sock``
(its full app, with every task's logs, is on its TCP address only: ``theseus.agent.http``).
The docker driver mounts that directory into every container at ``/run/theseus``;
``THESEUS_DISCOVERY`` tells a task where the socket is (``theseus.agent.environment``).
Anything that can reach the socket is a container of any task, so it answers discovery
reads and nothing else: no logs, nothing that changes state (any other path or method is a
404 or 405), and no group's ``environment`` in the configs it relays. Containers never need
the server's address: the two routes below are proxied to the server through
``AsyncServerClient``, also served on the agent's TCP address:

* ``GET /v1/registry/{service}`` → the server's ``RegistryService`` JSON;
* ``GET /v1/registry/watch?services=a,b&index=N&wait=S`` → the server's ``RegistryWatch``
  JSON, a long-poll (``wait`` defaults to 30 s and is capped at 60 s).

Errors: ``503 {"message": ...}`` when the server is unreachable; the server's own status and
message when it answers 4xx/5xx; ``400`` for malformed parameters.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from theseus.api.agent_client import AsyncServerClient
from theseus.api.client import ApiError, ServerUnreachable
from theseus.api.schemas import RegistryService

DEFAULT_WATCH_WAIT = 30.0
MAX_WATCH_WAIT = 60.0
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes on Linux, NUL included


# Keys of a group's config that a container of another task does not see: its variables may
# hold credentials ("Containers see only what is theirs").
PRIVATE_CONFIG_KEYS = ("environment",)


def without_private_config(answer: RegistryService) -> RegistryService:
    """``answer`` with each group's ``environment`` (a pod member's too) left out (pure)."""

    def public(config: dict[str, object]) -> dict[str, object]:
        kept = {k: v for k, v in config.items() if k not in PRIVATE_CONFIG_KEYS}
        members = kept.get("containers")
        if isinstance(members, list):
            kept["containers"] = [public(m) if isinstance(m, dict) else m for m in members]
        return kept

    groups = [g.model_copy(update={"config": public(g.config)}) for g in answer.groups]
    return answer.model_copy(update={"groups": groups})


def registry_routes(server: AsyncServerClient, for_containers: bool = False) -> list[Route]:
    """The proxied registry reads (``watch`` first: it is not a service name);
    ``for_containers``: without the groups' environments (``without_private_config``)."""

    async def read(name: str) -> BaseModel:
        answer = await server.registry(name)
        return without_private_config(answer) if for_containers else answer

    async def service(request: Request) -> Response:
        name = request.path_params["service"]
        return await _proxied(lambda: read(name))

    async def watch(request: Request) -> Response:
        params = request.query_params
        services = [s for s in (s.strip() for s in params.get("services", "").split(",")) if s]
        if not services:
            return _error(400, "services: give one or more service names, comma-separated")
        try:
            index = int(params.get("index") or 0)
        except ValueError:
            return _error(400, f"index must be an integer, not {params['index']!r}")
        try:
            wait = float(params.get("wait") or DEFAULT_WATCH_WAIT)
        except ValueError:
            wait = math.nan
        if math.isnan(wait):
            return _error(400, f"wait must be a number of seconds, not {params['wait']!r}")
        wait = min(max(wait, 0.0), MAX_WATCH_WAIT)
        return await _proxied(lambda: server.registry_watch(services, index, wait))

    return [Route("/v1/registry/watch", watch), Route("/v1/registry/{service}", service)]


def discovery_app(server: AsyncServerClient) -> Starlette:
    """What the discovery socket serves: the registry reads, nothing else."""

    async def not_here(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return _error(
            status,
            "the discovery socket answers only GET /v1/registry/{service} and "
            "GET /v1/registry/watch",
        )

    return Starlette(
        routes=registry_routes(server, for_containers=True),
        exception_handlers={404: not_here, 405: not_here},
    )


async def _proxied(call: Callable[[], Awaitable[BaseModel]]) -> Response:
    try:
        answer = await call()
    except ServerUnreachable as exc:
        return _error(503, str(exc))
    except ApiError as exc:
        body: dict[str, object] = {"message": exc.message}
        if exc.details:
            body["details"] = exc.details
        return JSONResponse(body, exc.status)
    except ValidationError as exc:  # a server of another version: say so, do not crash
        return _error(502, f"the server's answer was not understood: {exc}")
    return JSONResponse(answer.model_dump(mode="json"))


def _error(status: int, message: str) -> Response:
    return JSONResponse({"message": message}, status)


def bind_unix_socket(path: Path) -> socket.socket:
    """A listening-ready unix socket at ``path`` that any user may connect to (0o666, in a
    0o755 directory, created if missing). A socket file left by an agent that died is
    replaced; one that still answers belongs to a live agent and is an error."""
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise OSError(
            f"the discovery socket path {path} is longer than {_SUN_PATH_MAX} bytes, the "
            "limit of unix sockets; choose a shorter --state-dir"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            if _answers(path):
                raise OSError(f"another process already serves the discovery socket {path}")
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        path.chmod(0o666)
    except OSError as exc:
        sock.close()
        raise OSError(f"the agent cannot listen on {path}: {exc}") from exc
    return sock


def remove_unix_socket(path: Path, inode: int) -> None:
    """Remove the socket file at ``path`` if it is still ours (the file ``inode`` we bound),
    not one that another agent bound since."""
    with contextlib.suppress(OSError):
        if path.lstat().st_ino == inode:
            path.unlink()


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True
