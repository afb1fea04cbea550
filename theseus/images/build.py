"""Building Theseus's local images through the Docker Engine, with no registry.

``build_image`` / ``build_images`` build them in dependency order: ``theseus/busybox``
(``FROM scratch`` plus Debian's static busybox), ``theseus/python-base`` (``FROM scratch`` plus
Debian's own CPython, see ``theseus.images.contexts``) and ``theseus/example`` (``FROM
theseus/python-base``). Called by ``theseus images build`` (``theseus.cli.images_cmd``) and the
integration tests (``build_busybox_image`` too). ``contexts`` assembles the build contexts; this
module only sends them. A build whose context has not changed since the image was last built
is skipped (the image carries the context's digest in a label). Never pulls.

With ``containers`` and the docker driver, one of the few modules that import aiodocker.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from theseus.images.contexts import IMAGES, BuildContext, ImageBuildError, busybox_context
from theseus.images.labels import LABEL_CONTEXT
from theseus.images.tags import BUSYBOX_IMAGE


@dataclass(frozen=True)
class BuiltImage:
    name: str
    tag: str
    id: str
    size: int  # bytes, all layers
    seconds: float  # assembling the context and building
    built: bool  # False: the image was up to date, nothing was sent to the Docker Engine
    replaced: str | None = None  # the id the tag had before a rebuild (removed when unused)


async def _inspect(docker: aiodocker.Docker, tag: str) -> dict[str, Any] | None:
    try:
        image: dict[str, Any] = await docker.images.inspect(tag)
    except DockerError as exc:
        if exc.status == 404:
            return None
        raise
    return image


def _context_label(image: dict[str, Any] | None) -> str | None:
    if image is None:
        return None
    labels = (image.get("Config") or {}).get("Labels") or {}
    label = labels.get(LABEL_CONTEXT)
    return str(label) if label is not None else None


async def _build(
    docker: aiodocker.Docker, context: BuildContext, force: bool
) -> tuple[bool, str | None]:
    """Build ``context`` unless the tagged image was built from the same context and its
    base images are unchanged; whether it was built, and the id of the image it replaced."""
    parents: list[str] = []
    for base in context.base_images:
        image = await _inspect(docker, base)
        if image is None:  # the classic builder would try to pull it: never
            raise ImageBuildError(
                f"{context.tag} is built FROM {base}, which is not built yet "
                "(theseus images build builds both, in order)"
            )
        parents.append(str(image["Id"]))
    digest = context.digest + "".join(f"+{parent}" for parent in parents)
    previous = await _inspect(docker, context.tag)
    if not force and _context_label(previous) == digest:
        return False, None
    await docker.images.build(
        fileobj=io.BytesIO(await asyncio.to_thread(context.gzipped)),
        encoding="gzip",
        tag=context.tag,
        labels={LABEL_CONTEXT: digest},
        pull=False,
        rm=True,
        forcerm=True,
    )
    current = await _inspect(docker, context.tag)
    if previous is None or current is None or previous["Id"] == current["Id"]:
        return True, None
    await _remove_if_unused(docker, str(previous["Id"]))
    return True, str(previous["Id"])


async def _remove_if_unused(docker: aiodocker.Docker, image_id: str) -> None:
    """Remove the image a rebuild replaced (now untagged), unless a container uses it or it is
    the base of another image (then the Docker Engine refuses, and it stays)."""
    try:
        await docker.images.delete(image_id, force=False, noprune=False)
    except DockerError as exc:
        if exc.status not in (404, 409):
            raise


async def build_image(name: str, force: bool = False) -> BuiltImage:
    """Build (or skip, when up to date) one of ``IMAGES``; never pulls."""
    try:
        tag, make_context = IMAGES[name]
    except KeyError:
        raise ImageBuildError(f"no image {name!r}; one of: {', '.join(IMAGES)}") from None
    started = time.monotonic()
    context = await asyncio.to_thread(make_context, tag)
    async with aiodocker.Docker() as docker:
        try:
            built, replaced = await _build(docker, context, force)
            image = await _inspect(docker, tag)
        except DockerError as exc:
            raise ImageBuildError(f"building {tag} failed: {exc.message}") from exc
    if image is None:
        raise ImageBuildError(f"building {tag} left no image")
    return BuiltImage(
        name=name,
        tag=tag,
        id=str(image["Id"]),
        size=int(image.get("Size") or 0),
        seconds=time.monotonic() - started,
        built=built,
        replaced=replaced,
    )


async def build_images(only: str | None = None, force: bool = False) -> AsyncIterator[BuiltImage]:
    """Build every image in dependency order (or just ``only``), yielding each when done."""
    if only is not None and only not in IMAGES:
        raise ImageBuildError(f"no image {only!r}; one of: {', '.join(IMAGES)}")
    replaced = []
    for name in IMAGES if only is None else [only]:
        image = await build_image(name, force)
        replaced += [image.replaced] if image.replaced else []
        yield image
    if replaced:  # a replaced base image can go once the images built FROM it were replaced
        async with aiodocker.Docker() as docker:
            for image_id in replaced:
                await _remove_if_unused(docker, image_id)


async def build_busybox_image(tag: str = BUSYBOX_IMAGE) -> str:
    """Build (or rebuild, cached) the busybox image under ``tag``; its image id."""
    async with aiodocker.Docker() as docker:
        try:
            await _build(docker, busybox_context(tag), force=False)
            image = await _inspect(docker, tag)
        except DockerError as exc:
            raise ImageBuildError(f"building {tag} failed: {exc.message}") from exc
    if image is None:
        raise ImageBuildError(f"building {tag} left no image")
    return str(image["Id"])
