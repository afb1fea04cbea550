"""The pure rules of image pulls: which registry an image names, whether to pull it, what a
failed pull is called, and how far a pull has got.

Called by ``theseus.agent.drivers.docker_pull`` (which does the pulling); unit-tested on its
own. Nothing here does I/O.

* ``registry_host``: Docker's own rule. An image names a registry host when its first path
  component contains ``.`` or ``:`` or is ``localhost`` (``registry.example:5000/app:1``,
  ``198.18.0.2:5000/theseus/busybox``); otherwise (``theseus/busybox``, ``busybox``) Docker
  would go to Docker Hub, which an agent does only when allowed (``--pull-unqualified``).
* ``pull_failure``: Docker's error messages, mapped to the reasons a task shows
  (``image not found in registry HOST``, ``registry HOST refused the credentials``,
  ``registry HOST unreachable: ...``), with any secret scrubbed from Docker's text.
* ``PullProgress``: bytes downloaded of the total, summed over the layers of one pull.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IF_NOT_PRESENT = "if_not_present"
ALWAYS = "always"


@dataclass(frozen=True)
class RegistryAuth:
    """A registry's credentials, as the agent hands them to Docker for one pull. The
    password is kept out of ``repr`` so that no log line or traceback shows it."""

    username: str
    password: str = field(repr=False)

    def docker_auth(self) -> dict[str, str]:
        """aiodocker's ``auth=`` (it adds the registry's address itself)."""
        return {"username": self.username, "password": self.password}


def registry_host(image: str) -> str | None:
    """The registry host an image names, or ``None`` for Docker Hub's short names."""
    first, slash, _ = image.partition("/")
    if not slash:
        return None
    if "." in first or ":" in first or first == "localhost":
        return first
    return None


def should_pull(image: str, policy: str, present: bool, allow_unqualified: bool) -> bool:
    """Whether to pull ``image`` before starting a container of it (pure). An image without
    a registry host is pulled only when the agent allows it, and then as the policy says."""
    if registry_host(image) is None and not allow_unqualified:
        return False
    return policy == ALWAYS or not present


def not_pulled_message(image: str, node: str) -> str:
    """A missing image that the agent may not pull (it names no registry host)."""
    return (
        f"image '{image}' is not present on node {node} and names no registry host, so it is "
        "not pulled (the agent's --pull-unqualified allows Docker Hub); build or load it, "
        "or push it to a registry and name it with the registry's host"
    )


_NOT_FOUND = ("manifest unknown", "not found", "name unknown", "repository does not exist")
_REFUSED = (
    "unauthorized",
    "authentication required",
    "denied",
    "incorrect username or password",
    "no basic auth credentials",
)
_UNREACHABLE = (
    "dial tcp",
    "connection refused",
    "connection reset",
    "no such host",
    "no route to host",
    "network is unreachable",
    "i/o timeout",
    "x509:",
    "tls:",
    "certificate",
    "http response to https client",
    "eof",
    "context deadline exceeded",
    "timeout exceeded",
)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def pull_failure(
    image: str,
    status: int | None,
    message: str,
    *,
    had_credentials: bool,
    secrets: tuple[str, ...] = (),
) -> str:
    """The reason a task shows for a failed pull of ``image`` (pure). ``status`` is the
    Engine's HTTP status (``None`` for an error inside the progress stream); ``secrets``
    are scrubbed from anything of Docker's that is repeated."""
    host = registry_host(image) or "docker.io"
    text = scrub(" ".join(message.split()), secrets)
    lowered = text.lower()
    # Credentials first: Docker Hub answers a private image without them with "repository
    # does not exist or may require 'docker login': denied".
    if any(word in lowered for word in _REFUSED):
        if had_credentials:
            return f"registry {host} refused the credentials for {image}"
        return (
            f"registry {host} requires credentials for {image} and none are stored "
            f"(theseus registry-login {host})"
        )
    if status == 404 or any(word in lowered for word in _NOT_FOUND):
        return f"image not found in registry {host}: {image}"
    if any(word in lowered for word in _UNREACHABLE):
        hint = "" if had_credentials else f" (no credentials are stored for {host})"
        return f"registry {host} unreachable: {text}{hint}"
    return f"pull of {image} from registry {host} failed: {text}"


def refused(reason: str) -> bool:
    """Whether a reason of ``pull_failure`` says the registry refused the credentials."""
    return reason.startswith("registry ") and " refused the credentials " in reason


def timed_out(image: str, timeout: float) -> str:
    return f"pull of {image} timed out after {timeout:g} s"


# Docker's per-layer statuses that mean the layer needs no more downloading.
_LAYER_DONE = ("download complete", "pull complete", "already exists", "verifying checksum")


@dataclass
class PullProgress:
    """Bytes downloaded of the total, over the layers of one pull, fed Docker's progress
    events one at a time (``{"status": "Downloading", "id": LAYER, "progressDetail":
    {"current": N, "total": M}}``)."""

    current: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)

    def feed(self, event: dict[str, Any]) -> bool:
        """Take one event; whether the sums changed."""
        layer = event.get("id")
        status = str(event.get("status") or "").lower()
        if not isinstance(layer, str) or not status:
            return False
        before = (self.downloaded, self.size)
        detail = event.get("progressDetail") or {}
        if status == "downloading" and isinstance(detail, dict):
            total, current = detail.get("total"), detail.get("current")
            if isinstance(total, int) and total > 0:
                self.total[layer] = total
            if isinstance(current, int):
                self.current[layer] = current
        elif status.startswith(_LAYER_DONE) and layer in self.total:
            self.current[layer] = self.total[layer]
        return (self.downloaded, self.size) != before

    @property
    def downloaded(self) -> int:
        return sum(min(c, self.total.get(layer, c)) for layer, c in self.current.items())

    @property
    def size(self) -> int:
        return sum(self.total.values())

    def text(self, image: str) -> str:
        """``pulling IMAGE: 12.3 of 40.1 MB`` (``pulling IMAGE`` before any size is known)."""
        if not self.size:
            return f"pulling {image}"
        return f"pulling {image}: {_mb(self.downloaded)} of {_mb(self.size)} MB"


def _mb(count: int) -> str:
    return f"{count / 1e6:.1f}"
