"""A real private image registry for tests: Debian's ``docker-registry`` (the CNCF
distribution registry, 2.8) with TLS from a throwaway CA and a bcrypt htpasswd password.

Used by the image-pull tests (``tests/integration/test_image_pulls.py``) on a loopback
address, and by the multi-host test bed (``scripts/testbed``) in its own network namespace at
198.18.0.2. ``start_image_registry`` returns once the registry answers ``/v2/`` (401 without
credentials); ``stop_image_registry`` stops it by PID. ``trust_registry`` makes the local
Docker Engine trust its CA (``/etc/docker/certs.d/<host>/ca.crt``, read at every pull, no
restart); ``push_images`` tags local images under the registry's host and pushes them with the
credentials passed per request (never ``docker login``, which would write them to
``~/.docker/config.json``).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import docker
import httpx

from theseus.cluster.supervise import spawn, tail
from theseus.security import pki

START_TIMEOUT = 20.0  # seconds for the registry to answer /v2/
STOP_GRACE = 5.0
CERTS_D = Path("/etc/docker/certs.d")

# Popen objects of the registries this process started, so that stopping one reaps it.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ImageRegistry:
    host: str  # "ADDRESS:PORT", what image names start with
    username: str
    password: str
    ca_cert: Path  # the test CA's certificate (PEM) that signed the registry's cert
    pid: int
    workdir: Path

    def image(self, name: str) -> str:
        """``name`` (``theseus/busybox:latest``) as this registry's image."""
        return f"{self.host}/{name}"


def _config(workdir: Path, address: str, port: int) -> str:
    return (
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: true\n"
        f'storage:\n  filesystem:\n    rootdirectory: "{workdir / "storage"}"\n'
        "  delete:\n    enabled: true\n"
        f'http:\n  addr: "{address}:{port}"\n'
        f'  tls:\n    certificate: "{workdir / "registry.crt"}"\n'
        f'    key: "{workdir / "registry.key"}"\n'
        f'auth:\n  htpasswd:\n    realm: theseus-test\n    path: "{workdir / "htpasswd"}"\n'
    )


def start_image_registry(
    workdir: Path,
    address: str,
    port: int,
    *,
    netns: str | None = None,
    username: str = "theseus",
    password: str | None = None,
) -> ImageRegistry:
    """Start a registry listening on ``address:port`` (inside network namespace ``netns``
    when given), its certificate, password file, storage and log under ``workdir``."""
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    password = password if password is not None else secrets.token_urlsafe(18)
    ca = pki.create_ca("image-registry")
    cert = pki.issue(ca, name="image-registry", role=pki.Role.SERVER, addresses=[address], days=7)
    ca_cert = workdir / "ca.crt"
    ca_cert.write_bytes(ca.cert)
    (workdir / "registry.crt").write_bytes(cert.cert)
    key = workdir / "registry.key"
    key.touch(mode=0o600)
    key.write_bytes(cert.key)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    (workdir / "htpasswd").write_text(f"{username}:{hashed}\n")
    config = workdir / "config.yml"
    config.write_text(_config(workdir, address, port))
    argv = ["docker-registry", "serve", str(config)]
    if netns is not None:
        argv = ["nsenter", f"--net=/var/run/netns/{netns}", *argv]
    log = workdir / "registry.log"
    process = spawn(argv, log)  # nsenter execs the registry: the PID is the registry's own
    _children[process.pid] = process
    registry = ImageRegistry(
        host=f"{address}:{port}",
        username=username,
        password=password,
        ca_cert=ca_cert,
        pid=process.pid,
        workdir=workdir,
    )
    try:
        _wait_answering(registry, process, log)
    except BaseException:
        stop_image_registry(registry)
        raise
    return registry


def _wait_answering(registry: ImageRegistry, process: subprocess.Popen[bytes], log: Path) -> None:
    context = ssl.create_default_context(cafile=str(registry.ca_cert))
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer yet"
    with httpx.Client(verify=context, timeout=2.0, trust_env=False) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {process.returncode}:\n{tail(log)}"
                )
            try:
                status = client.get(f"https://{registry.host}/v2/").status_code
                if status == 401:
                    return
                last = f"HTTP {status}"
            except httpx.HTTPError as exc:
                last = f"{exc.__class__.__name__}: {exc}"
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the registry at {registry.host} did not answer /v2/ within "
                    f"{START_TIMEOUT:g}s ({last}):\n{tail(log)}"
                )
            time.sleep(0.1)


def stop_image_registry(registry: ImageRegistry) -> None:
    """SIGTERM, then SIGKILL after a grace period; a registry already gone is fine."""
    process = _children.pop(registry.pid, None)
    with contextlib.suppress(ProcessLookupError):
        os.kill(registry.pid, signal.SIGTERM)
    if process is None:  # started by another process: wait for the PID to go
        deadline = time.monotonic() + STOP_GRACE
        while Path(f"/proc/{registry.pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(registry.pid, signal.SIGKILL)
        return
    try:
        process.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def trust_registry(registry: ImageRegistry) -> Path:
    """Make dockerd trust the registry's CA; returns the directory to remove afterwards."""
    directory = CERTS_D / registry.host
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(registry.ca_cert.read_bytes())
    return directory


def push_images(
    registry: ImageRegistry, images: Sequence[str], docker_url: str | None = None
) -> list[str]:
    """Tag each local image as ``<host>/<image>`` and push it; returns the pushed names.
    The credentials go with each push request, never into a Docker config file."""
    client = docker.from_env() if docker_url is None else docker.DockerClient(base_url=docker_url)
    auth = {"username": registry.username, "password": registry.password}
    pushed: list[str] = []
    try:
        for image in images:
            name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
            tag = tag or "latest"
            target = registry.image(name)
            client.images.get(image).tag(target, tag)
            errors = [
                str(line.get("error") or line.get("errorDetail"))
                for line in client.images.push(
                    target, tag, auth_config=auth, stream=True, decode=True
                )
                if line.get("error") or line.get("errorDetail")
            ]
            if errors:
                raise RuntimeError(f"push of {target}:{tag} failed: {'; '.join(errors)}")
            pushed.append(f"{target}:{tag}")
    finally:
        client.close()
    return pushed


def build_marked_image(docker_client: docker.DockerClient, tag: str, marker: str) -> str:
    """A new local image ``tag`` on theseus/busybox whose environment says MARKER=``marker``
    (built here, never pulled), so that a test tells two images under one tag apart; its id,
    which a push and a pull keep."""
    dockerfile = f"FROM theseus/busybox:latest\nENV MARKER={marker}\n".encode()
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, pull=False)
    return str(image.id)
