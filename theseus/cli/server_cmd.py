"""``theseus server``: run the control plane (HTTP API; leader when elected)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import typer

from theseus.cli.logsetup import (
    DEFAULT_BACKUPS,
    DEFAULT_MAX_BYTES,
    LOG_BACKUPS_HELP,
    LOG_FILE_HELP,
    LOG_FORMAT_HELP,
    LOG_MAX_BYTES_HELP,
    start_logging,
)
from theseus.security.files import PkiDir
from theseus.security.tls import is_loopback
from theseus.server.config import ServerConfig


def register(app: typer.Typer) -> None:
    @app.command()
    def server(
        host: str = typer.Option("127.0.0.1", help="Address to serve the API on."),
        port: int = typer.Option(5000, help="Port to serve the API on (the original's 5000)."),
        etcd: list[str] = typer.Option(
            ["127.0.0.1:2379"],
            help="etcd endpoint host:port (repeat, or separate with commas, for several "
            "members: the server moves to the next one when its member fails). "
            "https://host:port, or host:port with --etcd-cacert, is etcd over TLS.",
        ),
        etcd_cacert: Path | None = typer.Option(
            None,
            exists=True,
            dir_okay=False,
            readable=True,
            help="etcd over TLS (with --etcd-cert and --etcd-key): the CA certificate etcd's "
            "certificate must chain to.",
        ),
        etcd_cert: Path | None = typer.Option(
            None,
            exists=True,
            dir_okay=False,
            readable=True,
            help="The server's client certificate for etcd (etcd runs --client-cert-auth).",
        ),
        etcd_key: Path | None = typer.Option(
            None, exists=True, dir_okay=False, readable=True, help="That certificate's key."
        ),
        liveness_timeout: int = typer.Option(
            3,
            min=2,
            help="Seconds without a heartbeat before a node is declared lost and its tasks "
            "are replaced (agents heartbeat every second). Lower detects a dead machine "
            "sooner; higher tolerates longer network or load hiccups (a live node declared "
            "lost has its tasks started twice until it registers again). Clusters bigger "
            "than --max-heartbeats-per-second nodes get more: 3 heartbeat intervals.",
        ),
        max_heartbeats_per_second: float = typer.Option(
            100.0,
            min=1.0,
            help="Heartbeats per second the server accepts from all agents together. Beyond "
            "that many nodes, agents heartbeat every ceil(nodes / this) seconds and a node "
            "is lost after 3 intervals (1,000 nodes: every 10 s, lost after 30 s): a big "
            "cluster detects a dead machine later, but heartbeats cannot flood the server.",
        ),
        max_registering: int = typer.Option(
            32,
            min=1,
            help="Agents' registrations this server takes on at once. More, or any while its "
            "event loop lags, are answered 429 with a Retry-After that spreads them out: "
            "thousands of agents starting together cannot starve the heartbeats of the nodes "
            "already registered.",
        ),
        registry_repair_interval: float = typer.Option(
            3.0,
            min=0.1,
            help="Seconds between the leader's full comparisons of the service registry with "
            "task state (repairs entries edited by hand; /cleanup does it on demand).",
        ),
        leader_lease_ttl: int = typer.Option(
            2,
            min=2,
            help="Seconds of the leader's etcd lease: when the leader dies, another server "
            "takes over about this much later (2 is etcd's minimum with its default timings).",
        ),
        etcd_compaction_interval: float = typer.Option(
            300.0,
            min=0,
            help="Seconds between the leader's compactions of etcd's history, each keeping "
            "one interval of it (kube-apiserver's --etcd-compaction-interval). 0: none, when "
            "etcd compacts itself (--auto-compaction-retention).",
        ),
        pki_dir: Path | None = typer.Option(
            None,
            "--pki-dir",
            help="Serve TLS and require credentials: the directory holding ca.pem, "
            "server.pem and server-key.pem (and ca-key.pem to admit agents), as `theseus ca` "
            "makes it. Without it the API is plain HTTP and anyone who reaches it is admin: "
            "allowed on loopback only (a development cluster), or with --insecure.",
        ),
        agent_cert_days: float = typer.Option(
            90.0, min=0.0001, help="Lifetime in days of the certificates agents get at join."
        ),
        insecure: bool = typer.Option(
            False,
            "--insecure",
            help="Serve plain HTTP without authentication on a non-loopback address anyway.",
        ),
        max_request_bytes: int = typer.Option(
            ServerConfig.max_request_bytes,
            min=1024,
            help="Largest request body accepted, in bytes (default 4 MiB). A larger one is "
            "refused with 413 before it is read or parsed, whether it declares its length or "
            "is sent in chunks.",
        ),
        peer: list[str] = typer.Option(
            [],
            "--peer",
            help="Another server's URL (repeat for each): a dashboard tab open on this server "
            "moves there when this one stops answering.",
        ),
        log_level: str = typer.Option("info", help="debug, info, warning or error."),
        log_file: Path | None = typer.Option(None, help=LOG_FILE_HELP),
        log_max_bytes: int = typer.Option(DEFAULT_MAX_BYTES, min=1024, help=LOG_MAX_BYTES_HELP),
        log_backups: int = typer.Option(DEFAULT_BACKUPS, min=0, help=LOG_BACKUPS_HELP),
        log_format: str = typer.Option("text", help=LOG_FORMAT_HELP),
    ) -> None:
        """Run a Theseus server against etcd."""
        start_logging(log_level, log_file, log_max_bytes, log_backups, log_format)
        tls = _tls_options(pki_dir)
        if pki_dir is None:
            if not is_loopback(host) and not insecure:
                raise typer.BadParameter(
                    f"{host} is not a loopback address: serving the API there without TLS "
                    "would let anyone on the network run anything on every node. Give "
                    "--pki-dir (see docs/security.md), or --insecure if you really mean it.",
                    param_hint="--host",
                )
            logging.getLogger("theseus.server").warning(
                "DEVELOPMENT MODE: plain HTTP, no authentication: anyone who can reach "
                "%s:%d can run anything on every node%s",
                host,
                port,
                "" if is_loopback(host) else " (--insecure, on a non-loopback address!)",
            )
        endpoints = [e.strip() for item in etcd for e in item.split(",") if e.strip()]
        config = ServerConfig(
            host=host,
            port=port,
            etcd=endpoints,
            etcd_tls=_etcd_tls(endpoints, etcd_cacert, etcd_cert, etcd_key),
            liveness_timeout=liveness_timeout,
            max_heartbeats_per_second=max_heartbeats_per_second,
            registry_repair_interval=registry_repair_interval,
            max_registering=max_registering,
            leader_lease_ttl=leader_lease_ttl,
            etcd_compaction_interval=etcd_compaction_interval,
            pki_dir=pki_dir,
            agent_cert_days=agent_cert_days,
            insecure=insecure,
            max_request_bytes=max_request_bytes,
            peers=[_peer_url(url) for url in peer],
        )
        # Imported here: every other command (theseus agent included) starts without the
        # server's machinery (FastAPI, the store, the reconciler), half a second of imports.
        from theseus.server.serve import serve

        serve(config, log_level, tls.cert, tls.key, tls.ca)


class _TlsFiles(NamedTuple):
    cert: str | None = None
    key: str | None = None
    ca: str | None = None


def _tls_options(pki_dir: Path | None) -> _TlsFiles:
    """uvicorn's TLS settings: the server's certificate, and client certificates asked for
    (agents and servers present theirs) but not required (the CLI presents a token)."""
    if pki_dir is None:
        return _TlsFiles()
    pki = PkiDir(pki_dir)
    for path in (pki.ca_cert, pki.cert("server"), pki.key("server")):
        if not path.is_file():
            raise typer.BadParameter(f"{path} is missing", param_hint="--pki-dir")
    return _TlsFiles(str(pki.cert("server")), str(pki.key("server")), str(pki.ca_cert))


def _etcd_tls(
    endpoints: list[str], cacert: Path | None, cert: Path | None, key: Path | None
) -> tuple[Path, Path, Path] | None:
    """The three TLS files, all or none; https endpoints need them."""
    given = [f for f in (cacert, cert, key) if f is not None]
    if given and len(given) < 3:
        raise typer.BadParameter(
            "etcd over TLS needs all of --etcd-cacert, --etcd-cert, --etcd-key"
        )
    if cacert is not None and cert is not None and key is not None:
        return cacert, cert, key
    if any(e.startswith("https://") for e in endpoints):
        raise typer.BadParameter(
            "an https:// etcd endpoint needs --etcd-cacert, --etcd-cert and --etcd-key"
        )
    return None


def _peer_url(url: str) -> str:
    """A ``--peer`` as an origin (``scheme://host:port``), or a usage error naming it."""
    parts = urlsplit(url.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]+", parts.netloc)  # it goes into a CSP
    ):
        raise typer.BadParameter(
            f"{url!r}: a server's URL, such as https://10.0.0.12:5000", param_hint="--peer"
        )
    return f"{parts.scheme}://{parts.netloc}"
