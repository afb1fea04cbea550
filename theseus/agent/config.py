"""The agent's configuration (``AgentConfig``: every option ``theseus agent`` takes, with its
default) and where an agent keeps its state. Built by ``theseus.cli.agent_cmd`` and the
benchmarks' hollow nodes; read by ``theseus.agent.agent``."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from theseus.agent.drivers import DEFAULT_PULL_TIMEOUT
from theseus.agent.registry_logins import CACHE_SECONDS as LOGIN_CACHE_SECONDS
from theseus.agent.stats.collector import DEFAULT_INTERVAL as DEFAULT_STATS_INTERVAL
from theseus.agent.stats.collector import DEFAULT_RETENTION
from theseus.api.client import DEFAULT_SERVER
from theseus.images.tags import BUSYBOX_IMAGE
from theseus.model.hostgates import NodeGates
from theseus.model.logs import LogLimits


def machine_mem_mib() -> float:
    """Total memory from /proc/meminfo, in MiB (1024 when unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 1024.0


def default_state_dir(node: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "theseus" / "agents" / node


@dataclass
class AgentConfig:
    server: str = DEFAULT_SERVER
    name: str = field(default_factory=socket.gethostname)
    address: str = "127.0.0.1"  # advertised, published on, and the HTTP endpoint's address
    port: int = 5051
    cpus: float = field(default_factory=lambda: float(os.cpu_count() or 1))
    mem: float = field(default_factory=machine_mem_mib)
    port_range: tuple[int, int] = (31000, 32000)
    attributes: dict[str, str] = field(default_factory=dict)
    driver: str | None = None  # None: docker if the daemon answers, else process
    state_dir: Path | None = None  # None: default_state_dir(name)
    resync_interval: float = 7.0
    health_kills_per_minute: float = 10.0  # at once, then this many a minute (KillBudget)
    gates: NodeGates = field(default_factory=NodeGates)  # host volumes, privileges allowed
    poll_wait: float = 30.0
    serve_http: bool = True  # hollow agents of a benchmark may go without
    handle_signals: bool = True  # SIGTERM/SIGINT end run_agent (tests cancel it instead)
    transport: httpx.AsyncBaseTransport | None = None  # tests only
    # A secure cluster (https servers): the join token for the first start; later starts use
    # the certificate it got (``theseus.agent.identity``).
    join_token: str | None = None
    # Images (``theseus.agent.drivers.docker_pull``): the bound of one pull, whether images
    # without a registry host may be pulled (from Docker Hub), the pods' network image.
    pull_timeout: float = DEFAULT_PULL_TIMEOUT
    pull_unqualified: bool = False
    pod_infra_image: str = BUSYBOX_IMAGE
    registry_login_cache: float = LOGIN_CACHE_SECONDS  # 0: ask the server at every pull
    # The bound of each task's logs where its spec's ``logs`` sets none (``theseus.model.logs``).
    log_limits: LogLimits = field(default_factory=LogLimits)
    # Task metrics (``theseus.agent.stats``): seconds between two readings, and how long
    # the samples of each task are kept (in memory only).
    stats_interval: float = DEFAULT_STATS_INTERVAL
    stats_retention: float = DEFAULT_RETENTION
