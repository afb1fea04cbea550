"""What goes into Theseus's local images (``theseus.images.contexts``), without
Docker: the ldd parser on recorded output, the ELF interpreter lookup, the file selection from
Debian package listings, the tar context, and (where this machine has Debian's Python 3.11
packages, as scripts/setup installs them) the python-base file list and context themselves.
"""

from __future__ import annotations

import io
import re
import shutil
import struct
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from theseus.images.contexts import (
    IMAGES,
    Context,
    ImageBuildError,
    busybox_context,
    elf_interpreter,
    example_context,
    from_images,
    is_static_elf,
    package_files,
    parse_ldd,
    python_base_context,
    python_rootfs,
    python_runtime_paths,
    shared_libraries,
)
from theseus.images.tags import PYTHON_BASE_IMAGE

LDD_TWO_FILES = """\
/usr/bin/python3.11:
\tlinux-vdso.so.1 (0x00007fcc7ccba000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007fcc7cbc9000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007fcc7cbaa000)
\tlibexpat.so.1 => /lib/x86_64-linux-gnu/libexpat.so.1 (0x00007fcc7cb7f000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fcc7c99d000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007fcc7ccbc000)
/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so:
\tlinux-vdso.so.1 (0x00007fd0f2092000)
\tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007fd0f1fa3000)
\tlibcrypto.so.3 => /lib/x86_64-linux-gnu/libcrypto.so.3 (0x00007fd0f1a00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fd0f181e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007fd0f2094000)
"""

LDD_ONE_FILE = """\
\tlinux-vdso.so.1 (0x00007ffd2b1f2000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f54d287c000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f54d2650000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f54d296f000)
"""

# Excerpts of `dpkg-query -L` for Debian bookworm's Python 3.11 packages.
LISTING = [
    "/.",
    "/usr",
    "/usr/bin",
    "/usr/bin/python3.11",
    "/usr/lib/binfmt.d/python3.11.conf",
    "/usr/share/man/man1/python3.11.1.gz",
    "/usr/share/doc/python3.11-minimal/copyright",
    "/usr/lib/python3.11",
    "/usr/lib/python3.11/os.py",
    "/usr/lib/python3.11/encodings/__init__.py",
    "/usr/lib/python3.11/encodings/utf_8.py",
    "/usr/lib/python3.11/json/__init__.py",
    "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
    "/usr/lib/python3.11/lib-dynload/_testcapi.cpython-311-x86_64-linux-gnu.so",
    "/usr/lib/python3.11/lib-dynload/_ctypes_test.cpython-311-x86_64-linux-gnu.so",
    "/usr/lib/python3.11/lib-dynload/xxlimited.cpython-311-x86_64-linux-gnu.so",
    "/usr/lib/python3.11/test/__init__.py",
    "/usr/lib/python3.11/unittest/test/test_case.py",
    "/usr/lib/python3.11/idlelib/idle.py",
    "/usr/lib/python3.11/tkinter/__init__.py",
    "/usr/lib/python3.11/ensurepip/__init__.py",
    "/usr/lib/python3.11/lib2to3/main.py",
    "/usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
    "/usr/lib/python3.12/os.py",
]

needs_debian_python = pytest.mark.skipif(
    not (
        Path("/usr/bin/python3.11").exists() and shutil.which("dpkg-query") and shutil.which("ldd")
    ),
    reason="needs Debian's python3.11 packages, dpkg-query and ldd (scripts/setup installs them)",
)


def elf(is64: bool = True, interpreter: bytes | None = b"/lib64/ld-linux-x86-64.so.2") -> bytes:
    """A minimal little-endian x86 ELF file with one program header: PT_INTERP naming
    ``interpreter``, or PT_LOAD (a static executable) when it is None."""
    payload = (interpreter or b"") + b"\0"
    p_type = 3 if interpreter is not None else 1
    if is64:
        ehsize, phentsize = 64, 56
        fields = (2, 62, 1, 0, ehsize, 0, 0, ehsize, phentsize, 1, 0, 0, 0)
        header = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", *fields)
        at, size = ehsize + phentsize, len(payload)
        phdr = struct.pack("<IIQQQQQQ", p_type, 4, at, 0, 0, size, size, 1)
    else:
        ehsize, phentsize = 52, 32
        fields = (2, 3, 1, 0, ehsize, 0, 0, ehsize, phentsize, 1, 0, 0, 0)
        header = b"\x7fELF\x01\x01\x01" + bytes(9) + struct.pack("<HHIIIIIHHHHHH", *fields)
        at, size = ehsize + phentsize, len(payload)
        phdr = struct.pack("<IIIIIIII", p_type, at, 0, 0, size, size, 4, 1)
    return header + phdr + payload


# --- ELF and ldd ----------------------------------------------------------------------------


def test_elf_interpreter_64_and_32_bit() -> None:
    assert elf_interpreter(elf()) == "/lib64/ld-linux-x86-64.so.2"
    assert elf_interpreter(elf(is64=False, interpreter=b"/lib/ld-linux.so.2")) == (
        "/lib/ld-linux.so.2"
    )
    assert elf_interpreter(elf(interpreter=None)) is None


def test_is_static_elf() -> None:
    assert is_static_elf(elf(interpreter=None))
    assert not is_static_elf(elf())
    assert not is_static_elf(b"#!/bin/sh\necho not an ELF file\n")
    with pytest.raises(ValueError):
        elf_interpreter(b"#!/bin/sh\n")


def test_parse_ldd_several_files() -> None:
    assert parse_ldd(LDD_TWO_FILES) == [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libcrypto.so.3",
        "/lib/x86_64-linux-gnu/libexpat.so.1",
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/x86_64-linux-gnu/libssl.so.3",
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/lib64/ld-linux-x86-64.so.2",
    ]


def test_parse_ldd_one_file_leaves_out_the_vdso() -> None:
    libraries = parse_ldd(LDD_ONE_FILE)
    assert "/lib64/ld-linux-x86-64.so.2" in libraries
    assert not [lib for lib in libraries if "vdso" in lib]
    assert parse_ldd("\tstatically linked\n") == []
    assert parse_ldd("\tnot a dynamic executable\n") == []


def test_parse_ldd_missing_library_names_it_and_its_user() -> None:
    output = "/usr/lib/x.so:\n\tlibmpdec.so.3 => not found\n"
    with pytest.raises(ImageBuildError, match=r"libmpdec\.so\.3 \(needed by /usr/lib/x\.so\)"):
        parse_ldd(output)


def test_shared_libraries_runs_ldd_once() -> None:
    calls: list[list[str]] = []

    def run(argv: Sequence[str]) -> tuple[int, str]:
        calls.append(list(argv))
        return 0, LDD_TWO_FILES

    assert "/lib/x86_64-linux-gnu/libssl.so.3" in shared_libraries(["/a", "/b"], run)
    assert calls == [["ldd", "/a", "/b"]]


# --- Debian packages ------------------------------------------------------------------------


def test_package_files_of_a_missing_package_says_what_to_install() -> None:
    def run(argv: Sequence[str]) -> tuple[int, str]:
        return 1, ""

    with pytest.raises(ImageBuildError, match=r"apt-get install libpython3\.11-stdlib"):
        package_files("libpython3.11-stdlib", run)


def test_package_files_keeps_paths_only() -> None:
    def run(argv: Sequence[str]) -> tuple[int, str]:
        assert list(argv) == ["dpkg-query", "-L", "python3.11-minimal"]
        return 0, "/.\n/usr/bin/python3.11\npackage diverts others to: /x\n"

    assert package_files("python3.11-minimal", run) == ["/.", "/usr/bin/python3.11"]


def test_python_runtime_paths_keeps_the_interpreter_and_the_stdlib_only() -> None:
    kept = python_runtime_paths(LISTING)
    assert kept == [
        "/usr/bin/python3.11",
        "/usr/lib/python3.11/encodings/__init__.py",
        "/usr/lib/python3.11/encodings/utf_8.py",
        "/usr/lib/python3.11/json/__init__.py",
        "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
        "/usr/lib/python3.11/os.py",
    ]


# --- the tar context ------------------------------------------------------------------------


def members(tar_bytes: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return {info.name: info for info in tar.getmembers()}


def test_context_tar_is_deterministic_with_parents_and_symlinks(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_text("x")

    def build() -> bytes:
        context = Context()
        context.add_file("rootfs/usr/bin/tool", source, 0o755)
        context.add_symlink("rootfs/usr/bin/alias", "tool")
        context.add_dir("rootfs/tmp", 0o1777)
        context.add_bytes("Dockerfile", b"FROM scratch\n")
        return context.tar()

    first = build()
    assert first == build()
    got = members(first)
    assert list(got) == sorted(got)
    assert got["rootfs/usr"].isdir() and got["rootfs/usr/bin"].isdir()
    assert got["rootfs/usr/bin/tool"].mode == 0o755
    assert got["rootfs/usr/bin/tool"].mtime == int(source.stat().st_mtime)
    assert got["rootfs/usr/bin/alias"].issym() and got["rootfs/usr/bin/alias"].linkname == "tool"
    assert got["rootfs/tmp"].mode == 0o1777
    assert {info.uid for info in got.values()} == {0}


def test_context_reads_through_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"content")
    (tmp_path / "link").symlink_to("real")
    context = Context()
    context.add_file("copy", tmp_path / "link")
    with tarfile.open(fileobj=io.BytesIO(context.tar())) as tar:
        copy = tar.getmember("copy")
        assert copy.isfile()
        assert tar.extractfile(copy).read() == b"content"  # type: ignore[union-attr]


def test_context_of_a_missing_file_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="missing"):
        Context().add_file("x", tmp_path / "nope")


def test_from_images() -> None:
    dockerfile = "# c\nFROM scratch\nFROM --platform=linux/amd64 theseus/python-base:latest AS b\n"
    assert from_images(dockerfile) == ["theseus/python-base:latest"]


# --- the images -----------------------------------------------------------------------------


def test_images_are_listed_after_their_base_images() -> None:
    assert list(IMAGES) == ["busybox", "python-base", "example"]
    seen: set[str] = set()
    for tag, make in IMAGES.values():
        if make is python_base_context:
            seen.add(tag)
            continue  # needs this machine's Debian packages: tested below
        for base in make(tag).base_images:
            assert base in seen
        seen.add(tag)


def test_example_context() -> None:
    context = example_context()
    assert context.base_images == (PYTHON_BASE_IMAGE,)
    got = members(context.tar)
    assert set(got) == {"Dockerfile", "boot.py", "watch_methods.py"}
    assert example_context().digest == context.digest


def test_busybox_context_refuses_a_dynamic_busybox(tmp_path: Path) -> None:
    fake = tmp_path / "busybox"
    fake.write_bytes(elf())
    with pytest.raises(ImageBuildError, match="busybox-static"):
        busybox_context(busybox=fake)
    with pytest.raises(ImageBuildError, match="apt-get install busybox-static"):
        busybox_context(busybox=tmp_path / "missing")


def test_watch_methods_prints_one_parseable_line(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "theseus/images/example/watch_methods.py"
    spec = importlib.util.spec_from_file_location("watch_methods_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.service_change("ingestor", 2)
    module.service_change("db", -1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"service_change\('ingestor', 2\) at \d{10}\.\d{6}", lines[0])
    assert re.fullmatch(r"service_change\('db', -1\) at \d{10}\.\d{6}", lines[1])


@needs_debian_python
def test_python_rootfs_holds_interpreter_loader_stdlib_and_libraries() -> None:
    files = python_rootfs()
    for path in (
        "/usr/bin/python3.11",
        "/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/python3.11/os.py",
        "/usr/lib/python3.11/encodings/__init__.py",
        "/usr/lib/python3.11/json/__init__.py",
        "/usr/lib/python3.11/http/client.py",
        "/usr/lib/python3.11/logging/__init__.py",
    ):
        assert path in files, path
    names = {Path(path).name for path in files}
    assert "libc.so.6" in names and "libssl.so.3" in names
    assert "libgcc_s.so.1" in names  # dlopen()ed by glibc for pthread_exit
    assert any(p.startswith("/usr/lib/python3.11/lib-dynload/_ssl.") for p in files)
    assert not [p for p in files if "/test/" in p or "/idlelib/" in p or "__pycache__" in p]
    assert all(source.is_file() for source in files.values())


@needs_debian_python
def test_python_base_context(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match=r"guestutils\.py, .*watcher\.py missing"):
        python_base_context(guest_dir=tmp_path)
    (tmp_path / "guestutils.py").write_text("GUEST = 1\n")
    (tmp_path / "watcher.py").write_text("WATCHER = 1\n")
    context = python_base_context(guest_dir=tmp_path)
    assert context.base_images == ()
    got = members(context.tar)
    assert got["rootfs/usr/bin/python3"].issym()
    assert got["rootfs/usr/bin/python3"].linkname == "python3.11"
    assert got["rootfs/usr/bin/python3.11"].mode & 0o111
    assert got["rootfs/bin/busybox"].mode == 0o755
    assert got["rootfs/tmp"].mode == 0o1777
    assert {"lib/guestutils.py", "lib/watcher.py", "Dockerfile"} <= set(got)
    for name in ("passwd", "group", "nsswitch.conf"):
        assert f"rootfs/etc/{name}" in got
    assert python_base_context(guest_dir=tmp_path).digest == context.digest
    (tmp_path / "watcher.py").write_text("WATCHER = 2\n")
    assert python_base_context(guest_dir=tmp_path).digest != context.digest
