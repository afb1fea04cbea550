"""Build contexts of Theseus's local images, assembled in memory from files on this machine.

No container registry is reachable, and Theseus never pulls, so every image is built
``FROM scratch`` (or from another local image) out of files that Debian has already installed
here. This module decides *what goes into* each image and writes the tar context; it does no
Docker I/O (``theseus.images.build`` sends the contexts to the Docker Engine; ``theseus images
build`` names the images after ``IMAGES``). The images' own files are this package's data
directories (``busybox/``, ``python-base/``, ``example/``).

* ``theseus/busybox``: Debian's static busybox and ``busybox/entry.sh``.
* ``theseus/python-base``: the original's ``mesos-base`` (ubuntu + python + python-etcd),
  rebuilt without a registry. It holds **Debian's own CPython**, the very bytes of the host's
  ``python3.11-minimal``, ``libpython3.11-minimal`` and ``libpython3.11-stdlib`` packages (the
  files ``dpkg-query -L`` lists, minus the test suite, IDLE, tkinter, ensurepip and lib2to3), the
  shared libraries they link (found with ``ldd``, copied to the paths the loader searches, symlinks
  followed), the dynamic loader, a few ``/etc`` files, static busybox for a shell, and Theseus's
  stdlib-only guest modules (``theseus/guestutils.py``, ``theseus/watcher.py``) in
  ``/opt/theseus/lib``, on ``PYTHONPATH``. python-etcd is not needed any more: guest code asks its
  agent's discovery endpoint over HTTP. Copying installed packages, rather than compiling Python
  or unpacking a downloaded tarball, needs no network, is reproducible from the Debian package
  versions, and gets Debian's security updates whenever the image is rebuilt. Debian ships no
  bytecode (its postinst compiles it), so the Dockerfile compiles the stdlib once: 11 MB more,
  and ``import json, http.server, logging`` takes 40 ms instead of 200 ms in a new container.
  About 48 MB in all.
* ``theseus/example``: the original's ``example_mesos_image`` (``FROM`` python-base, a
  ``boot.py`` using guestutils and the watcher, and ``watch_methods.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from theseus.images.tags import BUSYBOX_IMAGE, EXAMPLE_IMAGE, PYTHON_BASE_IMAGE

IMAGES_DIR = Path(__file__).resolve().parent  # theseus/images/: each image's own files
GUEST_DIR = IMAGES_DIR.parent  # theseus/: guestutils.py and watcher.py
GUEST_MODULES = ("guestutils.py", "watcher.py")
BUSYBOX_BINARY = Path("/bin/busybox")  # from Debian's busybox-static package

PYTHON_VERSION = "3.11"  # Debian bookworm's
PYTHON_PACKAGES = (
    f"python{PYTHON_VERSION}-minimal",  # the interpreter
    f"libpython{PYTHON_VERSION}-minimal",  # the core of the stdlib
    f"libpython{PYTHON_VERSION}-stdlib",  # the rest of the stdlib and its extension modules
)
# Parts of the stdlib a container never needs (tests, GUI, bootstrapping pip, 2to3).
SKIPPED_DIRS = frozenset(
    {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "__pycache__"}
)
SKIPPED_EXTENSIONS = ("_test", "_ctypes_test", "_xxtestfuzz", "_xxsubinterpreters", "xxlimited")
# Loaded with dlopen(), so ldd cannot see it: glibc needs it to unwind a thread in
# pthread_exit, which CPython calls for a daemon thread that outlives the interpreter.
DLOPENED_LIBRARIES = ("libgcc_s.so.1",)

_PT_INTERP = 3

Runner = Callable[[Sequence[str]], tuple[int, str]]


class ImageBuildError(RuntimeError):
    """The image could not be built; the message says what to install or fix."""


# --- ELF and ldd ----------------------------------------------------------------------------


def elf_interpreter(data: bytes) -> str | None:
    """The program interpreter (dynamic loader) an ELF executable names, or ``None`` when it
    names none (statically linked, or a shared library). Raises ValueError for non-ELF data."""
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64, order = data[4] == 2, "<" if data[5] == 1 else ">"
    if is64:
        (phoff,) = struct.unpack_from(order + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
    else:
        (phoff,) = struct.unpack_from(order + "I", data, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 42)
    for i in range(phnum):
        header = phoff + i * phentsize
        (p_type,) = struct.unpack_from(order + "I", data, header)
        if p_type != _PT_INTERP:
            continue
        if is64:
            offset, size = struct.unpack_from(order + "Q16xQ", data, header + 8)
        else:
            offset, _, _, size = struct.unpack_from(order + "IIII", data, header + 4)
        return data[offset : offset + size].rstrip(b"\0").decode()
    return None


def is_static_elf(data: bytes) -> bool:
    """Whether ``data`` is an ELF executable without a program interpreter (statically
    linked), so that it can run on an empty ``FROM scratch`` filesystem."""
    try:
        return elf_interpreter(data) is None
    except ValueError:
        return False


def parse_ldd(output: str) -> list[str]:
    """The absolute paths of the shared objects in ``ldd`` output (of one or several files),
    sorted, without duplicates; the kernel's vDSO is left out. A library ldd cannot find
    raises ImageBuildError."""
    found: set[str] = set()
    current = "?"
    for raw in output.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not raw[:1].isspace() and line.endswith(":"):  # "file:" heading (several files)
            current = line[:-1]
            continue
        if line in ("statically linked", "not a dynamic executable"):
            continue
        name, arrow, rest = line.partition("=>")
        target = (rest if arrow else name).strip()
        if target.startswith("not found"):
            raise ImageBuildError(
                f"shared library {name.strip()} (needed by {current}) is not installed"
            )
        path = target.split(" (0x", 1)[0].strip()
        if path.startswith("/"):
            found.add(path)
    return sorted(found)


def run_command(argv: Sequence[str]) -> tuple[int, str]:
    """Run ``argv``; its exit status and standard output."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ImageBuildError(
            f"{argv[0]} not found: the python-base image is assembled from this machine's "
            "Debian packages (build it on Debian bookworm, see scripts/setup)"
        ) from None
    return proc.returncode, proc.stdout


def shared_libraries(files: Sequence[str], run: Runner = run_command) -> list[str]:
    """Every shared object ``files`` load, transitively (one ``ldd`` call)."""
    status, output = run(["ldd", *files])
    libraries = parse_ldd(output)
    if status != 0 and not libraries:
        raise ImageBuildError(f"ldd failed on {', '.join(files)}")
    return libraries


# --- Debian packages ------------------------------------------------------------------------


def package_files(package: str, run: Runner = run_command) -> list[str]:
    """The paths an installed Debian package owns (``dpkg-query -L``), directories included."""
    status, output = run(["dpkg-query", "-L", package])
    if status != 0:
        raise ImageBuildError(
            f"Debian package {package} is not installed; the python-base image is made of it: "
            f"apt-get install {package} (or run scripts/setup as root)"
        )
    return [line for line in output.splitlines() if line.startswith("/")]


def python_runtime_paths(listing: Iterable[str], version: str = PYTHON_VERSION) -> list[str]:
    """Of the paths the Python packages own, those the image needs: the interpreter and the
    stdlib, without tests, GUI, pip bootstrapping, 2to3, docs or test extension modules."""
    interpreter, stdlib = f"/usr/bin/python{version}", f"/usr/lib/python{version}/"
    kept = set()
    for path in listing:
        if path != interpreter and not path.startswith(stdlib):
            continue
        parts = PurePosixPath(path).parts
        if SKIPPED_DIRS.intersection(parts):
            continue
        if parts[-2] == "lib-dynload" and parts[-1].startswith(SKIPPED_EXTENSIONS):
            continue
        kept.add(path)
    return sorted(kept)


# --- the tar context ------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One entry of a build context: a file (inline ``data`` or read from ``source``,
    symlinks followed), a directory or a symlink."""

    kind: str  # "file", "dir" or "symlink"
    mode: int = 0o644
    data: bytes = b""
    source: Path | None = None
    target: str = ""
    mtime: int = 0

    def content(self) -> bytes:
        return self.source.read_bytes() if self.source is not None else self.data


class Context:
    """A Docker build context, written as a deterministic tar (sorted, root-owned, with the
    sources' mtimes) so that the Docker Engine's build cache recognises unchanged input."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.members[name] = Member("file", mode, data=data)

    def add_file(self, name: str, source: Path, mode: int | None = None) -> None:
        """``source``'s content (symlinks followed), mode and mtime under ``name``."""
        try:
            st = source.stat()
        except OSError as exc:
            raise ImageBuildError(f"{source} is missing ({exc.strerror})") from None
        perms = (st.st_mode & 0o7777) if mode is None else mode
        self.members[name] = Member("file", perms, source=source, mtime=int(st.st_mtime))

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self.members[name] = Member("dir", mode)

    def add_symlink(self, name: str, target: str) -> None:
        self.members[name] = Member("symlink", 0o777, target=target)

    def names(self) -> list[str]:
        return sorted(self.members)

    def tar(self) -> bytes:
        """The uncompressed tar; parent directories are added (0755) where missing."""
        members = dict(self.members)
        for name in list(members):
            for parent in PurePosixPath(name).parents:
                if str(parent) != ".":
                    members.setdefault(str(parent), Member("dir", 0o755))
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name in sorted(members):
                member = members[name]
                info = tarfile.TarInfo(name)
                info.mode, info.mtime = member.mode, member.mtime
                if member.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif member.kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, member.target
                    tar.addfile(info)
                else:
                    content = member.content()
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
        return raw.getvalue()


@dataclass(frozen=True)
class BuildContext:
    """What ``theseus.images.build`` sends to the Docker Engine for one image."""

    tag: str
    tar: bytes
    digest: str  # sha256 of the tar: equal digests (and equal base images) build equal images
    base_images: tuple[str, ...]  # the Dockerfile's FROM images (never pulled)

    def gzipped(self) -> bytes:
        return gzip.compress(self.tar, compresslevel=1, mtime=0)


def finish(tag: str, context: Context) -> BuildContext:
    raw = context.tar()
    dockerfile = context.members["Dockerfile"].content().decode()
    return BuildContext(
        tag=tag,
        tar=raw,
        digest=hashlib.sha256(raw).hexdigest(),
        base_images=tuple(from_images(dockerfile)),
    )


def from_images(dockerfile: str) -> list[str]:
    """The images a Dockerfile's ``FROM`` lines name, ``scratch`` left out."""
    images = []
    for line in dockerfile.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "FROM":
            image = next(w for w in words[1:] if not w.startswith("--"))
            if image != "scratch":
                images.append(image)
    return images


# --- the images -----------------------------------------------------------------------------


def static_busybox(path: Path = BUSYBOX_BINARY) -> Path:
    try:
        binary = path.read_bytes()
    except OSError as exc:
        raise ImageBuildError(
            f"{path} is missing ({exc.strerror}); install Debian's busybox-static package "
            "(apt-get install busybox-static)"
        ) from None
    if not is_static_elf(binary):
        raise ImageBuildError(
            f"{path} is not a statically linked executable and cannot run FROM scratch; "
            "install Debian's busybox-static package instead of busybox"
        )
    return path


def busybox_context(
    tag: str = BUSYBOX_IMAGE,
    busybox: Path = BUSYBOX_BINARY,
    context_dir: Path = IMAGES_DIR / "busybox",
) -> BuildContext:
    """Dockerfile, entry script and the static busybox binary."""
    context = Context()
    context.add_file("Dockerfile", context_dir / "Dockerfile", 0o644)
    context.add_file("entry.sh", context_dir / "entry.sh", 0o755)
    context.add_file("busybox", static_busybox(busybox), 0o755)
    return finish(tag, context)


def python_rootfs(
    run: Runner = run_command,
    packages: Sequence[str] = PYTHON_PACKAGES,
    version: str = PYTHON_VERSION,
) -> dict[str, Path]:
    """The files of the python-base root filesystem that come from Debian packages: image path
    → host file (read through symlinks). The interpreter, the stdlib, every shared library
    they link and the dynamic loader."""
    listing: list[str] = []
    for package in packages:
        listing += package_files(package, run)
    files = {path: Path(path) for path in python_runtime_paths(listing, version)}
    files = {path: source for path, source in files.items() if source.is_file()}
    interpreter = f"/usr/bin/python{version}"
    if interpreter not in files:
        raise ImageBuildError(f"{interpreter} is missing; apt-get install {packages[0]}")
    elves = [interpreter] + sorted(p for p in files if p.endswith(".so"))
    libraries = shared_libraries(elves, run)
    loader = elf_interpreter(Path(interpreter).read_bytes())
    if loader is not None and loader not in libraries:
        libraries.append(loader)
    libc_dirs = {str(PurePosixPath(lib).parent) for lib in libraries if "/libc.so" in lib}
    for directory in sorted(libc_dirs):
        for name in DLOPENED_LIBRARIES:
            if (Path(directory) / name).is_file():
                libraries.append(f"{directory}/{name}")
    for library in libraries:
        files[library] = Path(library)
    return files


def python_base_context(
    tag: str = PYTHON_BASE_IMAGE,
    run: Runner = run_command,
    guest_dir: Path = GUEST_DIR,
    busybox: Path = BUSYBOX_BINARY,
    context_dir: Path = IMAGES_DIR / "python-base",
) -> BuildContext:
    """``Dockerfile``, ``rootfs/`` (copied to ``/``) and ``lib/`` (the guest modules, copied
    to ``/opt/theseus/lib``)."""
    guest = [guest_dir / name for name in GUEST_MODULES]
    missing = [str(path) for path in guest if not path.is_file()]
    if missing:
        raise ImageBuildError(
            f"{', '.join(missing)} missing: the python-base image bakes Theseus's guest modules "
            f"({', '.join(GUEST_MODULES)}) into /opt/theseus/lib"
        )
    context = Context()
    context.add_file("Dockerfile", context_dir / "Dockerfile", 0o644)
    for image_path, source in python_rootfs(run).items():
        context.add_file("rootfs" + image_path, source)
    context.add_symlink("rootfs/usr/bin/python3", f"python{PYTHON_VERSION}")
    context.add_file("rootfs/bin/busybox", static_busybox(busybox), 0o755)
    for name in sorted(os.listdir(context_dir / "etc")):
        context.add_file(f"rootfs/etc/{name}", context_dir / "etc" / name, 0o644)
    context.add_dir("rootfs/tmp", 0o1777)
    context.add_dir("rootfs/root", 0o700)
    for module in guest:
        context.add_file(f"lib/{module.name}", module, 0o644)
    return finish(tag, context)


def example_context(
    tag: str = EXAMPLE_IMAGE, context_dir: Path = IMAGES_DIR / "example"
) -> BuildContext:
    """``Dockerfile``, ``boot.py`` and ``watch_methods.py``."""
    context = Context()
    for name in ("Dockerfile", "boot.py", "watch_methods.py"):
        context.add_file(name, context_dir / name, 0o644)
    return finish(tag, context)


# name → (tag, context), in build order: an image comes after the images it is FROM.
IMAGES: dict[str, tuple[str, Callable[[str], BuildContext]]] = {
    "busybox": (BUSYBOX_IMAGE, busybox_context),
    "python-base": (PYTHON_BASE_IMAGE, python_base_context),
    "example": (EXAMPLE_IMAGE, example_context),
}
