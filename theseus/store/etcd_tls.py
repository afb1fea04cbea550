"""etcd over TLS with a client certificate: the credentials (``EtcdTls``), which endpoints use
them (``parse_endpoint``), and the aetcd client whose channel is a secure one (``TlsClient``).

aetcd 1.0 only opens plain gRPC channels; ``TlsClient.connect`` is aetcd's own ``connect``
with ``grpc.aio.secure_channel`` in place of ``insecure_channel``, so everything built on the
channel (its stubs, the watcher, the store's lease stream) runs over TLS unchanged. The
cache's watch, read through etcd's HTTP gateway, gets the same as an ``ssl.SSLContext``
(``EtcdTls.ssl_context``).

Called by ``theseus.store.etcd`` (``EtcdStore`` makes one client per member it connects to) and
by the server's app (``EtcdTls.from_files`` on ``theseus server --etcd-cacert/--etcd-cert/
--etcd-key``). Key material never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import aetcd
import grpc  # type: ignore[import-untyped]
from aetcd import watcher

DEFAULT_PORT = 2379


class EtcdTlsError(ValueError):
    """TLS settings that cannot be used: missing credentials, an unreadable file."""


@dataclass(frozen=True)
class EtcdTls:
    """The cluster CA that etcd's certificate must chain to, and this client's certificate
    and key (etcd runs with ``--client-cert-auth``), all PEM."""

    ca: bytes
    cert: bytes
    key: bytes = field(repr=False)

    @classmethod
    def from_files(cls, ca: Path, cert: Path, key: Path) -> EtcdTls:
        """Read etcdctl's ``--cacert``, ``--cert`` and ``--key``; ``EtcdTlsError`` names the
        file that cannot be read, never what it holds."""
        return cls(_read(ca, "CA certificate"), _read(cert, "certificate"), _read(key, "key"))

    def credentials(self) -> Any:
        """gRPC channel credentials: verify the member against ``ca``, present ``cert``."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same for an asyncio connection (the watch, ``theseus.store.etcd_watch``): the
        member's certificate must chain to ``ca`` and name the host dialled."""
        context = ssl.create_default_context(cadata=self.ca.decode())
        # load_cert_chain reads only files: give it the PEM in files that live in memory,
        # so that the key is never written anywhere.
        with _memory_file("cert", self.cert) as cert, _memory_file("key", self.key) as key:
            context.load_cert_chain(cert, key)
        return context


@contextmanager
def _memory_file(name: str, data: bytes) -> Iterator[str]:
    fd = os.memfd_create(name)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _read(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EtcdTlsError(f"cannot read the etcd client's {what} {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise EtcdTlsError(f"the etcd client's {what} {path} is not PEM")
    return data


class Endpoint(NamedTuple):
    host: str
    port: int
    secure: bool

    def __str__(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}"


def parse_endpoint(endpoint: str, tls: EtcdTls | None) -> Endpoint:
    """``https://host:port`` is TLS and needs ``tls``; ``http://host:port`` is plain and
    refuses ``tls`` (credentials given for a plain endpoint would silently go unused);
    ``host:port`` is TLS exactly when ``tls`` is given, as with etcdctl."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        scheme, rest = ("https" if tls is not None else "http"), endpoint
    if scheme not in ("http", "https"):
        raise EtcdTlsError(f"etcd endpoint {endpoint!r}: scheme must be http or https")
    secure = scheme == "https"
    if secure and tls is None:
        raise EtcdTlsError(
            f"etcd endpoint {endpoint} is https: give the client's CA, certificate and key "
            "(theseus server --etcd-cacert, --etcd-cert, --etcd-key)"
        )
    if not secure and tls is not None:
        raise EtcdTlsError(
            f"etcd endpoint {endpoint} is plain http, but TLS credentials were given: "
            "use https:// (or host:port)"
        )
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host:
        host, port = rest.rstrip("/"), ""
    try:
        number = int(port or DEFAULT_PORT)
    except ValueError:
        raise EtcdTlsError(f"etcd endpoint {endpoint!r}: bad port {port!r}") from None
    return Endpoint(host.strip("[]"), number, secure)


def make_client(
    endpoint: Endpoint, tls: EtcdTls | None, timeout: int, options: dict[str, Any]
) -> aetcd.Client:
    """The aetcd client of one member: plain, or over TLS."""
    if endpoint.secure:
        assert tls is not None  # parse_endpoint saw to it
        return TlsClient(endpoint.host, endpoint.port, tls, timeout=timeout, options=options)
    return aetcd.Client(host=endpoint.host, port=endpoint.port, timeout=timeout, options=options)


class TlsClient(aetcd.Client):  # type: ignore[misc]
    """aetcd's client over a TLS channel that presents a client certificate. The member's
    certificate must chain to ``tls.ca`` and name the host dialled (an IP SAN for an IP)."""

    def __init__(
        self, host: str, port: int, tls: EtcdTls, timeout: int, options: dict[str, Any]
    ) -> None:
        super().__init__(host=host, port=port, timeout=timeout, options=options)
        self._credentials = tls.credentials()

    async def connect(self) -> None:
        """aetcd's ``Client.connect`` (1.0.0) with a secure channel; no etcd user/password
        (the certificate is the identity). Opening a channel does no I/O: a refused handshake
        shows on the first call, as an unreachable member does."""
        if self._connected.is_set():
            return
        target = f"{self._host}:{self._port}"
        self.channel = grpc.aio.secure_channel(
            target, self._credentials, options=list(self._options.items())
        )
        self.kvstub = aetcd.rpc.KVStub(self.channel)
        self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
        self.leasestub = aetcd.rpc.LeaseStub(self.channel)
        self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(
            aetcd.rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()
