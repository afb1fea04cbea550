"""Where a process keeps its certificates and keys: one directory, fixed names.

::

    <dir>/ca.pem              the cluster CA's certificate (everyone)
    <dir>/ca-key.pem          the CA's key (servers only: they sign agents' certificates)
    <dir>/<name>.pem          a holder's certificate: server, agent, etcd, etcd-<member>, client
    <dir>/<name>-key.pem      its key (mode 0600)

Called by ``theseus ca``, the launcher, the server (its own certificate and the CA), the agent
(what it got at join, renewed in place) and ``theseus.store.etcd`` (the etcd client's).
Writes are atomic (a temporary file renamed over the old one), so a process that dies while
renewing leaves the old pair or the new one, never half of each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from theseus.security.pki import Issued, PkiError


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically, readable by its owner only (``mode``)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


@dataclass(frozen=True)
class PkiDir:
    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca-key.pem"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.root / f"{name}-key.pem"

    def has(self, name: str) -> bool:
        return self.cert(name).is_file() and self.key(name).is_file()

    def has_ca_key(self) -> bool:
        return self.ca_cert.is_file() and self.ca_key.is_file()

    def read_ca(self) -> bytes:
        try:
            return self.ca_cert.read_bytes()
        except FileNotFoundError:
            raise PkiError(f"no CA certificate at {self.ca_cert}") from None

    def read_ca_pair(self) -> Issued:
        """The CA with its key (a server's: it signs); ``PkiError`` where it is absent."""
        try:
            return Issued(self.ca_cert.read_bytes(), self.ca_key.read_bytes())
        except FileNotFoundError as exc:
            raise PkiError(f"no CA key pair in {self.root} ({exc.filename} is missing)") from None

    def read(self, name: str) -> Issued:
        try:
            return Issued(self.cert(name).read_bytes(), self.key(name).read_bytes())
        except FileNotFoundError as exc:
            raise PkiError(f"no {name} certificate in {self.root} ({exc.filename})") from None

    def write_ca(self, ca: Issued) -> None:
        write_private(self.ca_key, ca.key)
        write_private(self.ca_cert, ca.cert, 0o644)

    def write_ca_cert(self, cert: bytes) -> None:
        write_private(self.ca_cert, cert, 0o644)

    def write(self, name: str, issued: Issued) -> None:
        # The key first: a reader that finds the new certificate then finds its key too.
        write_private(self.key(name), issued.key)
        write_private(self.cert(name), issued.cert, 0o644)
