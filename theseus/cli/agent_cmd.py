"""``theseus agent``: run this machine's node agent (``theseus.agent.run_agent``).

Registered by ``theseus.cli.main``; ``theseus up`` and the integration harness start agents
with it. It runs until SIGTERM/SIGINT and leaves its tasks running when it exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from theseus.agent.config import AgentConfig, machine_mem_mib
from theseus.agent.drivers import DEFAULT_PULL_TIMEOUT, DRIVERS
from theseus.api.client import DEFAULT_SERVER
from theseus.api.failover import parse_addresses
from theseus.cli.logsetup import (
    DEFAULT_BACKUPS,
    DEFAULT_MAX_BYTES,
    LOG_BACKUPS_HELP,
    LOG_FILE_HELP,
    LOG_FORMAT_HELP,
    LOG_MAX_BYTES_HELP,
    start_logging,
)
from theseus.images.tags import BUSYBOX_IMAGE
from theseus.model.hostgates import (
    HOST_VOLUME_NAME,
    HostVolume,
    NodeGates,
    cap_problem,
    normalise_cap,
)
from theseus.model.logs import DEFAULT_MAX_FILES, DEFAULT_MAX_SIZE, SIZE_HELP, LogLimits
from theseus.security.tls import is_loopback


def parse_port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        first, last = int(low), int(high)
    except ValueError:
        first = last = 0
    if not sep or not 1 <= first <= last <= 65535:
        raise typer.BadParameter(f"{text!r} is not a port range like 31000-32000")
    return first, last


def parse_attributes(pairs: list[str]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value")
        attributes[key] = value
    return attributes


def parse_host_volume(text: str) -> HostVolume:
    """``NAME=/host/path[:ro]`` (``--host-volume``)."""
    name, sep, rest = text.partition("=")
    path, _, mode = rest.partition(":")
    if not sep or not path.startswith("/") or mode not in ("", "ro", "rw"):
        raise typer.BadParameter(
            f"--host-volume {text!r}: give NAME=/absolute/path or NAME=/path:ro"
        )
    try:
        return HostVolume(name=name, path=path, read_only=mode == "ro")
    except ValueError:
        raise typer.BadParameter(
            f"--host-volume {text!r}: the name must match {HOST_VOLUME_NAME} "
            "(letters, digits, '_', '.', '-')"
        ) from None


def parse_caps(names: list[str]) -> list[str]:
    """``--allow-cap`` values, normalised (``cap_net_admin`` → ``NET_ADMIN``)."""
    caps = sorted({normalise_cap(name) for name in names})
    for cap in caps:
        problem = cap_problem(cap)
        if problem is not None:
            raise typer.BadParameter(f"--allow-cap {cap}: {problem}")
    return caps


def parse_gates(
    host_volumes: list[str], allow_privileged: bool, allow_host_namespaces: bool, caps: list[str]
) -> NodeGates:
    """The node's gates from ``theseus agent``'s flags; a bad one is a ``typer.BadParameter``
    naming it. Paths are checked when the agent starts (``theseus.agent.gates``)."""
    return NodeGates(
        host_volumes=[parse_host_volume(text) for text in host_volumes],
        allow_privileged=allow_privileged,
        allow_host_namespaces=allow_host_namespaces,
        allow_caps=parse_caps(caps),
    )


def parse_log_limits(max_size: str, max_files: int) -> LogLimits:
    """``--log-max-size`` and ``--log-max-files``; a bad one is a ``typer.BadParameter``."""
    try:
        return LogLimits.of(max_size, max_files)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-max-size") from None


def register(app: typer.Typer) -> None:
    @app.command()
    def agent(
        server: Annotated[
            list[str] | None,
            typer.Option(
                envvar="THESEUS_SERVER",
                metavar="URL",
                help="Address of a Theseus server; repeat it, or separate with commas, for "
                "several: the agent moves to the next one when a server does not answer "
                f"(default: {DEFAULT_SERVER}).",
                show_default=False,
            ),
        ] = None,
        join: Annotated[
            str | None,
            typer.Option(
                "--join",
                metavar="URL",
                help="Join a secure cluster through this server (https://...): with --token, "
                "the agent checks the server's CA against the token, gets its certificate and "
                "keeps it in its state directory; later starts need neither.",
            ),
        ] = None,
        token: Annotated[
            str | None,
            typer.Option(
                "--token",
                envvar="THESEUS_JOIN_TOKEN",
                help="Join token from `theseus join-token` (better in THESEUS_JOIN_TOKEN: "
                "command lines are visible to every user of the machine).",
                show_envvar=True,
            ),
        ] = None,
        name: Annotated[
            str | None, typer.Option(help="Node name (default: the host name).")
        ] = None,
        address: Annotated[
            str,
            typer.Option(
                help="Address to advertise, serve the agent's endpoint on and publish "
                "container ports on."
            ),
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port of the agent's HTTP endpoint.")] = 5051,
        cpus: Annotated[
            float | None, typer.Option(help="CPUs to offer (default: this machine's).")
        ] = None,
        mem: Annotated[
            float | None, typer.Option(help="Memory to offer in MiB (default: total memory).")
        ] = None,
        port_range: Annotated[
            str, typer.Option(help="Host ports the server may allocate here, low-high.")
        ] = "31000-32000",
        attribute: Annotated[
            list[str] | None,
            typer.Option(
                "--attr",
                "--attribute",
                help="Node attribute key=value for placement constraints, e.g. --attr rack=r1 "
                "(repeatable). `hostname` is built in: the node's name.",
            ),
        ] = None,
        driver: Annotated[
            str | None,
            typer.Option(help=f"{'|'.join(DRIVERS)} (default: docker if Docker answers)."),
        ] = None,
        state_dir: Annotated[
            Path | None,
            typer.Option(
                help="Agent state (process logs, the containers' discovery socket); "
                "default ~/.local/state/theseus/..."
            ),
        ] = None,
        max_health_kills_per_minute: Annotated[
            float,
            typer.Option(
                min=0,
                help="Tasks this agent may kill for failing health checks: that many at once, "
                "then that many a minute. One over budget stays unhealthy (out of the "
                "registry) and is killed when the budget allows, if it still fails.",
            ),
        ] = 10.0,
        host_volume: Annotated[
            list[str] | None,
            typer.Option(
                metavar="NAME=/PATH[:ro]",
                help="A host directory specs may mount by name (`volumes: [NAME:/in/container]`); "
                "`:ro`: never writable. Repeatable. /, /etc, /proc, /sys, /dev, Docker's socket "
                "and data, etcd's data and Theseus's state are refused, whatever the spelling.",
            ),
        ] = None,
        allow_privileged: Annotated[
            bool,
            typer.Option(
                "--allow-privileged",
                help="Let specs run privileged containers (`privileged: true`).",
            ),
        ] = False,
        allow_host_namespaces: Annotated[
            bool,
            typer.Option(
                "--allow-host-namespaces",
                help="Let specs use the host's network and PID namespaces "
                "(`network_mode: host`, `pid_mode: host`).",
            ),
        ] = False,
        allow_cap: Annotated[
            list[str] | None,
            typer.Option(
                metavar="CAP",
                help="A capability beyond Kubernetes' Baseline that specs may add (`cap_add`), "
                "e.g. NET_ADMIN. Repeatable.",
            ),
        ] = None,
        insecure: Annotated[
            bool,
            typer.Option(
                "--insecure",
                help="Serve the agent's endpoint in plain HTTP without credentials on a "
                "non-loopback --address anyway (a development cluster spread over machines).",
            ),
        ] = False,
        pull_unqualified: Annotated[
            bool,
            typer.Option(
                "--pull-unqualified",
                help="Also pull images that name no registry host (e.g. `busybox`, from "
                "Docker Hub). Without it only images like `registry.example:5000/app:1` "
                "are pulled, so an offline machine never reaches for a public registry.",
            ),
        ] = False,
        pull_timeout: Annotated[
            float,
            typer.Option(min=1, help="Seconds one image pull may take before the task fails."),
        ] = DEFAULT_PULL_TIMEOUT,
        pod_infra_image: Annotated[
            str,
            typer.Option(
                help="The image of each pod's network container (as kubelet's); pulled like "
                "any image when it names a registry host.",
            ),
        ] = BUSYBOX_IMAGE,
        registry_login_cache: Annotated[
            float,
            typer.Option(
                min=0,
                help="Seconds a registry's login fetched from the server is reused by "
                "later pulls (0: fetched for every pull).",
            ),
        ] = AgentConfig.registry_login_cache,
        log_max_size: Annotated[
            str,
            typer.Option(
                help=f"The size of one file of a task's logs ({SIZE_HELP}); a spec's "
                "`logs: {max_size}` wins.",
            ),
        ] = DEFAULT_MAX_SIZE,
        log_max_files: Annotated[
            int,
            typer.Option(
                min=1,
                max=100,
                help="Files of a task's logs kept, the one being written included (the "
                "oldest is dropped): at most SIZE × FILES on disk per container. A spec's "
                "`logs: {max_files}` wins.",
            ),
        ] = DEFAULT_MAX_FILES,
        stats_interval: Annotated[
            float,
            typer.Option(
                min=1,
                help="Seconds between two readings of the tasks' cgroups (CPU, memory, "
                "processes, network; about an hour of them is kept in memory).",
            ),
        ] = AgentConfig.stats_interval,
        log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
        log_file: Annotated[Path | None, typer.Option(help=LOG_FILE_HELP)] = None,
        log_max_bytes: Annotated[
            int, typer.Option(min=1024, help=LOG_MAX_BYTES_HELP)
        ] = DEFAULT_MAX_BYTES,
        log_backups: Annotated[int, typer.Option(min=0, help=LOG_BACKUPS_HELP)] = DEFAULT_BACKUPS,
        log_format: Annotated[str, typer.Option(help=LOG_FORMAT_HELP)] = "text",
    ) -> None:
        """Run this machine's node agent: register, run assigned tasks, report them."""
        if driver is not None and driver not in DRIVERS:
            raise typer.BadParameter(f"choose one of {', '.join(DRIVERS)}", param_hint="--driver")
        start_logging(log_level, log_file, log_max_bytes, log_backups, log_format)
        try:
            servers = parse_addresses(
                [*([join] if join else []), *(server or [])] or [DEFAULT_SERVER]
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--server") from None
        secure = any(s.startswith("https://") for s in servers)
        if not secure and not is_loopback(address) and not insecure:
            raise typer.BadParameter(
                f"{address} is not a loopback address: the agent's endpoint would serve its "
                "tasks' logs there without TLS or credentials. Join a secure cluster (--join "
                "https://SERVER), or give --insecure if you really mean it.",
                param_hint="--address",
            )
        gates = parse_gates(
            host_volume or [], allow_privileged, allow_host_namespaces, allow_cap or []
        )
        log_limits = parse_log_limits(log_max_size, log_max_files)
        config = AgentConfig(
            server=",".join(servers),
            name=name or socket.gethostname(),
            address=address,
            port=port,
            cpus=cpus if cpus is not None else float(os.cpu_count() or 1),
            mem=mem if mem is not None else machine_mem_mib(),
            port_range=parse_port_range(port_range),
            attributes=parse_attributes(attribute or []),
            driver=driver,
            state_dir=state_dir,
            health_kills_per_minute=max_health_kills_per_minute,
            gates=gates,
            join_token=token,
            pull_timeout=pull_timeout,
            pull_unqualified=pull_unqualified,
            pod_infra_image=pod_infra_image,
            registry_login_cache=registry_login_cache,
            log_limits=log_limits,
            stats_interval=stats_interval,
        )
        # Here, not at the top: every other command would load the agent's loops, aiohttp
        # and uvicorn (0.4 s of a CLI call's 1.4 s of imports here).
        from theseus.agent.agent import run_agent

        try:
            asyncio.run(run_agent(config))
        except KeyboardInterrupt:  # a second Ctrl-C during shutdown
            raise typer.Exit(130) from None
        except Exception as exc:  # e.g. the server refused the registration: no traceback
            if log_file is not None:  # there too: stderr may be kept nowhere
                logging.getLogger("theseus.agent").error("the agent stops: %r", exc)
            typer.echo(f"theseus agent: {exc.__class__.__name__}: {exc}", err=True)
            raise typer.Exit(1) from None
