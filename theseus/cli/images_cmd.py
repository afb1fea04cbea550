"""``theseus images build``: build the local images the examples and tests use.

Registered by ``theseus.cli.main``. No registry is reachable, so images are built locally
(``FROM scratch`` with Debian's busybox-static) by the agent's Docker helper.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from theseus.cli.output import console, fail

images_app = typer.Typer(help="Local container images.", no_args_is_help=True)


@images_app.command()
def build(
    tag: Annotated[str, typer.Option(help="Tag of the busybox image.")] = "theseus/busybox:latest",
) -> None:
    """Build the busybox image used by examples/ and the tests (never pulls)."""
    from theseus.agent.drivers.docker_images import build_busybox_image

    try:
        image = asyncio.run(build_busybox_image(tag))
    except Exception as exc:  # Docker missing or the build failed: say what, no traceback
        fail(f"could not build {tag}: {exc.__class__.__name__}: {exc}")
    console.print(f"built {tag} ({image})")


def register(app: typer.Typer) -> None:
    app.add_typer(images_app, name="images")
