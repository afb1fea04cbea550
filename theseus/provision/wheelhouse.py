"""The wheelhouse a host installs Theseus from: the project's wheel and every dependency,
pinned to the versions installed on the workstation, so that hosts run what the workstation
runs and need no package index for Theseus. It holds pip's wheel too (the workstation's
version): a host runs pip from it into a venv made without pip, as making a venv with pip
(ensurepip installing and compiling pip and setuptools) took 8 of a host's 22 s of install.

Built once per source tree: its directory is named by a hash of the sources, of the pins and
of the Python version (``<root>/<hash>/``), so a second bootstrap, or another cluster's, reuses
it. Built from a clean copy of the sources (setuptools' ``build/`` can hold removed modules).
Called by ``theseus.provision.run`` on the workstation.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import theseus

PROJECT = "theseus-orchestrator"
WHEEL_PREFIX = "theseus_orchestrator-"
PIP_PREFIX = "pip-"


class WheelhouseError(RuntimeError):
    pass


@dataclass(frozen=True)
class Wheelhouse:
    directory: Path
    build: str  # the hash that names it; recorded on each host
    project_wheel: str
    pip_wheel: str  # run from the wheel itself: ``python <wheelhouse>/<pip_wheel>/pip install``


def source_root() -> Path:
    """The source tree of the running Theseus (an editable install's)."""
    root = Path(theseus.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or f'name = "{PROJECT}"' not in pyproject.read_text():
        raise WheelhouseError(
            f"no Theseus source tree at {root}: theseus cluster bootstrap builds the wheel that "
            "hosts install from the sources (install Theseus with `pip install -e .`)"
        )
    return root


def _source_files(root: Path) -> list[Path]:
    files = [root / "pyproject.toml", root / "README.md"]
    for path in sorted((root / "theseus").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append(path)
    return [f for f in files if f.is_file()]


def pins() -> str:
    """The workstation's installed distributions, as pip constraints (pip's own included:
    ``pip freeze`` leaves it out)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise WheelhouseError(f"pip freeze failed: {done.stderr.strip()[-500:]}")
    lines = [line for line in done.stdout.splitlines() if line and not line.startswith("-e")]
    lines.append(f"pip=={_version('pip')}")
    return "".join(f"{line}\n" for line in lines if " @ " not in line)


def source_hash(root: Path, constraints: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"{sys.version_info[0]}.{sys.version_info[1]}\n".encode())
    digest.update(constraints.encode())
    for path in _source_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _wheel(directory: Path, prefix: str) -> str:
    wheels = sorted(p.name for p in directory.glob(f"{prefix}*.whl"))
    if len(wheels) != 1:
        raise WheelhouseError(f"{directory}: expected one {prefix}*.whl, found {wheels}")
    return wheels[0]


def _found(directory: Path, build: str) -> Wheelhouse:
    return Wheelhouse(
        directory, build, _wheel(directory, WHEEL_PREFIX), _wheel(directory, PIP_PREFIX)
    )


def ensure(root_dir: Path) -> Wheelhouse:
    """The wheelhouse of the running sources, built now if it is not there yet."""
    root = source_root()
    constraints = pins()
    build = source_hash(root, constraints)
    directory = root_dir / build
    if directory.is_dir():
        return _found(directory, build)
    root_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="theseus-wheelhouse-") as tmp:
        copy = Path(tmp) / "src"
        for path in _source_files(root):
            target = copy / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        (Path(tmp) / "constraints.txt").write_text(constraints)
        out = Path(tmp) / "wheels"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check"]
            + ["-w", str(out), "-c", str(Path(tmp) / "constraints.txt"), str(copy), "pip"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise WheelhouseError(f"pip wheel failed: {done.stderr.strip()[-1500:]}")
        staging = root_dir / f".{build}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(out, staging)
        staging.rename(directory)  # whole or not at all: a half-built one is never used
    return _found(directory, build)


def planned(root_dir: Path) -> Wheelhouse:
    """The wheelhouse ``ensure`` would use, without building it (``--dry-run``)."""
    root = source_root()
    build = source_hash(root, pins())
    directory = root_dir / build
    if directory.is_dir():
        return _found(directory, build)
    return Wheelhouse(
        directory,
        build,
        f"{WHEEL_PREFIX}{theseus_version()}-py3-none-any.whl",
        f"{PIP_PREFIX}{_version('pip')}-py3-none-any.whl",
    )


def theseus_version() -> str:
    return _version(PROJECT)


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)
