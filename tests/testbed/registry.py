"""The test bed's image registry: Debian's ``docker-registry`` in namespace ``ths-tb-registry``
at 198.18.0.2:5000, TLS from a test CA and a password (``tests.kit.image_registry`` starts it);
every engine trusts its CA (``/etc/docker/certs.d/<host>/ca.crt``, one directory all engines of
this machine read), and the project's images are pushed there from the root namespace's engine.

Called by ``tests.testbed.up``; ``credentials`` by the tests and the fixture. The password is
kept in ``.testbed/registry/credentials.json`` (0600) and never printed.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.kit.image_registry import (
    CERTS_D,
    ImageRegistry,
    push_images,
    start_image_registry,
    trust_registry,
)
from tests.testbed.plan import RegistryPlan
from theseus.security.files import write_private

IMAGES = ("theseus/busybox:latest", "theseus/python-base:latest", "theseus/example:latest")
CREDENTIALS_FILE = "credentials.json"


@dataclass(frozen=True)
class RegistryCredentials:
    host: str  # 198.18.0.2:5000
    username: str
    password: str
    ca_cert: Path

    def __repr__(self) -> str:  # never the password, wherever it is printed
        return f"RegistryCredentials(host={self.host!r}, username={self.username!r})"

    @property
    def auth_config(self) -> dict[str, str]:
        """What the Docker SDK's ``pull(..., auth_config=)`` takes."""
        return {"username": self.username, "password": self.password}


def start(plan: RegistryPlan) -> ImageRegistry:
    plan.workdir.mkdir(parents=True, exist_ok=True)
    registry = start_image_registry(plan.workdir, plan.address, plan.port, netns=plan.netns)
    write_private(
        plan.workdir / CREDENTIALS_FILE,
        json.dumps(
            {
                "host": registry.host,
                "username": registry.username,
                "password": registry.password,
                "ca_cert": str(registry.ca_cert),
            }
        ).encode(),
    )
    return registry


def certs_dir(registry: ImageRegistry) -> Path:
    return certs_dir_of(registry.host)


def certs_dir_of(host: str) -> Path:
    """Where every engine of this machine looks for the CA of registry ``host``."""
    return CERTS_D / host


def trust(registry: ImageRegistry) -> Path:
    """The certs.d directory made for it (``down`` removes it)."""
    return trust_registry(registry)


def push(registry: ImageRegistry) -> list[str]:
    """The project's images, from the root namespace's engine (tagged there as
    ``<host>/<name>``: ``down`` removes these tags); the names pushed."""
    return push_images(registry, list(IMAGES))


def missing_images() -> list[str]:
    """Those of the project's images the root namespace's engine lacks (or all of them, when
    it does not answer: the push needs it)."""
    try:
        with contextlib.closing(docker.from_env()) as engine:
            missing = []
            for image in IMAGES:
                try:
                    engine.images.get(image)
                except docker.errors.ImageNotFound:
                    missing.append(image)
            return missing
    except docker.errors.DockerException as exc:
        raise RuntimeError(f"this machine's Docker Engine does not answer: {exc}") from None


def untag(tags: list[str]) -> tuple[list[str], list[str]]:
    """Remove the root engine's tags the push made, never forced: a tag is only a name, but
    when a container uses its image (someone's build FROM it, at this moment) and it is the
    image's last name, a forced removal deletes the image under that build. Such a tag is
    kept and said so. (What could not be removed, what was kept.)"""
    left: list[str] = []
    kept: list[str] = []
    try:
        engine = docker.from_env()
    except docker.errors.DockerException as exc:
        return [f"tags {', '.join(tags)}: this machine's Docker Engine: {exc}"], kept
    with contextlib.closing(engine):
        for tag in tags:
            try:
                engine.images.remove(tag, noprune=True)
            except docker.errors.ImageNotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    kept.append(f"{tag} (its image is in use by a container)")
                else:
                    left.append(f"tag {tag}: {exc}")
    return left, kept


def credentials(plan: RegistryPlan) -> RegistryCredentials:
    data = json.loads((plan.workdir / CREDENTIALS_FILE).read_text())
    return RegistryCredentials(
        host=data["host"],
        username=data["username"],
        password=data["password"],
        ca_cert=Path(data["ca_cert"]),
    )
