"""``STATE/cluster.json``: what ``theseus up`` started, so that ``theseus down`` can stop it.

Owns the file's schema and its atomic read/write. Called by ``theseus.cluster.local``. The file
is rewritten after every process start, so a crash half-way through ``up`` still leaves a record
that ``down`` can clean up from.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

STATE_FILE = "cluster.json"
MARKER_FILE = ".theseus-state"  # `down --purge` only deletes directories carrying it

ProcessRole = Literal["etcd", "server", "agent"]


class ProcessRecord(BaseModel):
    name: str  # etcd, server, node-1, ...
    role: ProcessRole
    pid: int
    command: list[str]
    log: str
    address: str | None = None  # agents: the loopback address they advertise


class ClusterRecord(BaseModel):
    version: Literal[1] = 1
    state_dir: str
    api_url: str
    etcd_endpoint: str
    port: int
    etcd_port: int
    driver: str | None = None
    # Every server and etcd member (``up --ha``); empty in records of one of each.
    api_urls: list[str] = Field(default_factory=list)
    etcd_endpoints: list[str] = Field(default_factory=list)
    cluster_id: str | None = None
    started_at: float = Field(default_factory=time.time)
    processes: list[ProcessRecord] = Field(default_factory=list)

    def by_role(self, role: ProcessRole) -> list[ProcessRecord]:
        return [p for p in self.processes if p.role == role]

    @property
    def servers(self) -> list[str]:
        return self.api_urls or [self.api_url]

    @property
    def server_address(self) -> str:
        """What ``--server`` / ``THESEUS_SERVER`` take: every server, comma-separated."""
        return ",".join(self.servers)

    @property
    def etcd_ports(self) -> list[int]:
        return [int(e.rpartition(":")[2]) for e in self.etcd_endpoints] or [self.etcd_port]


class StateFileError(RuntimeError):
    pass


def state_file(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def load(state_dir: Path) -> ClusterRecord | None:
    """The recorded cluster, or None when there is none."""
    path = state_file(state_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return ClusterRecord.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise StateFileError(f"{path} is not a valid Theseus state file: {exc}") from None


def save(state_dir: Path, record: ClusterRecord) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / MARKER_FILE).touch()
    path = state_file(state_dir)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(record.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)


def clear(state_dir: Path) -> None:
    state_file(state_dir).unlink(missing_ok=True)


def is_state_dir(path: Path) -> bool:
    return (path / MARKER_FILE).exists() or state_file(path).exists()
