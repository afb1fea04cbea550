"""Local images and cluster-wide container clean-up, through the Docker Engine.

* ``build_busybox_image``: builds ``theseus/busybox`` with no registry (``FROM scratch`` plus
  Debian's static busybox and ``theseus/images/busybox/entry.sh``). Called by
  ``theseus images build`` and the integration tests.
* ``remove_cluster_containers``: force-removes every container of a cluster (by its
  ``theseus.cluster`` label). Called by ``theseus down``.

With ``drivers/docker.py``, the only module that imports aiodocker.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import aiodocker
from aiodocker.exceptions import DockerError

from theseus.agent.drivers.base import LABEL_CLUSTER

BUSYBOX_IMAGE = "theseus/busybox:latest"
BUSYBOX_BINARY = Path("/bin/busybox")  # from Debian's busybox-static package
CONTEXT_DIR = Path(__file__).resolve().parents[2] / "images" / "busybox"

_PT_INTERP = 3


class ImageBuildError(RuntimeError):
    """The image could not be built; the message says what to install or fix."""


def is_static_elf(data: bytes) -> bool:
    """Whether ``data`` is an ELF executable without a program interpreter (statically
    linked), so that it can run on an empty ``FROM scratch`` filesystem."""
    if data[:4] != b"\x7fELF":
        return False
    is64, little = data[4] == 2, data[5] == 1
    order = "<" if little else ">"
    if is64:
        (phoff,) = struct.unpack_from(order + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
    else:
        (phoff,) = struct.unpack_from(order + "I", data, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 42)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(order + "I", data, phoff + i * phentsize)
        if p_type == _PT_INTERP:
            return False
    return True


def busybox_context(busybox: Path = BUSYBOX_BINARY, context_dir: Path = CONTEXT_DIR) -> bytes:
    """The gzip'ed tar build context: Dockerfile, entry script and the busybox binary."""
    try:
        binary = busybox.read_bytes()
    except OSError as exc:
        raise ImageBuildError(
            f"{busybox} is missing ({exc.strerror}); install Debian's busybox-static package "
            "(apt-get install busybox-static)"
        ) from None
    if not is_static_elf(binary):
        raise ImageBuildError(
            f"{busybox} is not a statically linked executable and cannot run FROM scratch; "
            "install Debian's busybox-static package instead of busybox"
        )
    files = {
        "Dockerfile": ((context_dir / "Dockerfile").read_bytes(), 0o644),
        "entry.sh": ((context_dir / "entry.sh").read_bytes(), 0o755),
        "busybox": (binary, 0o755),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), compresslevel=1)


async def build_busybox_image(tag: str = BUSYBOX_IMAGE) -> str:
    """Build (or rebuild, cached) the busybox image; return its image id. Never pulls."""
    context = busybox_context()
    async with aiodocker.Docker() as docker:
        try:
            await docker.images.build(
                fileobj=io.BytesIO(context), encoding="gzip", tag=tag, pull=False, rm=True
            )
            image = await docker.images.inspect(tag)
        except DockerError as exc:
            raise ImageBuildError(f"building {tag} failed: {exc.message}") from exc
    return str(image["Id"])


async def remove_cluster_containers(cluster_id: str) -> int:
    """Force-remove every container labelled ``theseus.cluster=<cluster_id>``; how many."""
    removed = 0
    async with aiodocker.Docker() as docker:
        containers = await docker.containers.list(
            all=True, filters={"label": [f"{LABEL_CLUSTER}={cluster_id}"]}
        )
        for container in containers:
            try:
                await container.delete(force=True, v=True)
            except DockerError as exc:
                if exc.status not in (404, 409):  # already gone or being removed
                    raise
                continue
            removed += 1
    return removed
