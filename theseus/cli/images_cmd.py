"""``theseus images build``: build the local images the examples and tests use.

Registered by ``theseus.cli.main``. No registry is reachable, so images are built locally, in
dependency order, by ``theseus.images.build``: ``theseus/busybox`` (``FROM scratch`` with
Debian's busybox-static), ``theseus/python-base`` (``FROM scratch`` with Debian's own Python
and Theseus's guest modules) and ``theseus/example`` (``FROM theseus/python-base``). An image
whose input has not changed is not rebuilt.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from theseus.cli.output import console, fail
from theseus.images.contexts import IMAGES

images_app = typer.Typer(help="Local container images.", no_args_is_help=True)

IMAGE_NAMES = tuple(IMAGES)


def human_size(size: int) -> str:
    """``47997221`` → ``48.0 MB`` (decimal units, as ``docker images`` shows them)."""
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.2f} GB"


@images_app.command()
def build(
    only: Annotated[
        str | None,
        typer.Option(
            "--only", metavar="NAME", help=f"Build just this image: {', '.join(IMAGE_NAMES)}."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even when nothing has changed.")
    ] = False,
) -> None:
    """Build theseus/busybox, theseus/python-base and theseus/example (never pulls)."""
    if only is not None and only not in IMAGE_NAMES:
        fail(f"no image {only!r}; one of: {', '.join(IMAGE_NAMES)}")
    from theseus.images.build import build_images

    async def run() -> None:
        async for image in build_images(only, force):
            state = "built" if image.built else "up to date"
            console.print(
                f"{image.tag}  {image.id.removeprefix('sha256:')[:12]}  "
                f"{human_size(image.size)}  {state} in {image.seconds:.1f}s"
            )

    try:
        asyncio.run(run())
    except Exception as exc:  # Docker missing or the build failed: say what, no traceback
        fail(f"{exc.__class__.__name__}: {exc}")


def register(app: typer.Typer) -> None:
    app.add_typer(images_app, name="images")
