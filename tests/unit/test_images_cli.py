"""``theseus images build`` without Docker: the builder is replaced by a fake."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from typer.testing import CliRunner

from theseus.cli.images_cmd import human_size
from theseus.cli.main import app
from theseus.images import build
from theseus.images.build import BuiltImage, ImageBuildError

runner = CliRunner()


def image(name: str, built: bool) -> BuiltImage:
    return BuiltImage(
        name=name,
        tag=f"theseus/{name}:latest",
        id="sha256:" + "ab" * 32,
        size=47_997_221,
        seconds=1.25,
        built=built,
    )


def test_build_prints_tag_id_size_and_state(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str | None, bool]] = []

    async def fake(only: str | None = None, force: bool = False) -> AsyncIterator[BuiltImage]:
        calls.append((only, force))
        yield image("busybox", built=False)
        yield image("python-base", built=True)

    monkeypatch.setattr(build, "build_images", fake)
    result = runner.invoke(app, ["images", "build"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "theseus/busybox:latest  abababababab  48.0 MB  up to date in 1.2s"
    assert lines[1] == "theseus/python-base:latest  abababababab  48.0 MB  built in 1.2s"
    assert calls == [(None, False)]


def test_build_only_and_force(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str | None, bool]] = []

    async def fake(only: str | None = None, force: bool = False) -> AsyncIterator[BuiltImage]:
        calls.append((only, force))
        yield image("example", built=True)

    monkeypatch.setattr(build, "build_images", fake)
    result = runner.invoke(app, ["images", "build", "--only", "example", "--force"])
    assert result.exit_code == 0, result.output
    assert calls == [("example", True)]


def test_build_of_an_unknown_image_fails_before_docker() -> None:
    result = runner.invoke(app, ["images", "build", "--only", "nginx"])
    assert result.exit_code == 1
    assert "no image 'nginx'; one of: busybox, python-base, example" in result.output


def test_build_failure_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake(only: str | None = None, force: bool = False) -> AsyncIterator[BuiltImage]:
        raise ImageBuildError("Debian package libpython3.11-stdlib is not installed")
        yield image("busybox", built=True)  # an async generator

    monkeypatch.setattr(build, "build_images", fake)
    result = runner.invoke(app, ["images", "build"])
    assert result.exit_code == 1
    assert "ImageBuildError: Debian package libpython3.11-stdlib is not installed" in (
        result.output
    )
    assert "Traceback" not in result.output


def test_human_size() -> None:
    assert human_size(512) == "512 B"
    assert human_size(1_986_438) == "2.0 MB"
    assert human_size(47_997_221) == "48.0 MB"
    assert human_size(2_500_000_000) == "2.50 GB"
