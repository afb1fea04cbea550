"""The hosts file of ``theseus cluster bootstrap|status|teardown -f hosts.yaml``: its model,
its validation and its loading (docs/machines.md has the format).

Owns what a valid file is: 1, 3 or 5 server hosts, unique names and advertise addresses, ports
that differ, paths expanded (``~``) and made absolute relative to the file, each host's
``ssh:``, ``install:`` and ``agent:`` over the file's (the ``agent:`` and ``server:`` blocks'
own model is ``theseus.provision.options``). Bad input is one
``HostsFileError`` listing every problem by its field (``hosts[2].advertise: field required``),
raised before anything connects. Called by ``theseus.cli.provision_cmd``; the plan
(``theseus.provision.plan``) reads the resolved ``Host`` records.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from theseus.provision.options import AgentOptions, ServerOptions

NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
SERVER_COUNTS = (1, 3, 5)  # etcd's static cluster: an odd number that keeps a quorum

Port = Annotated[int, Field(ge=1, le=65535)]
Role = Literal["server", "agent", "both"]


class HostsFileError(ValueError):
    """The hosts file cannot be used; the message lists each problem by its field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SshOptions(_Strict):
    """SSH settings; at the file's top they are every host's defaults, under a host they
    override them key by key."""

    user: str | None = None
    port: Port | None = None
    key: str | None = None
    known_hosts: str | None = None


class InstallOptions(_Strict):
    prefix: str | None = None
    docker_host: str | None = None


class Ports(_Strict):
    api: Port = 5000
    agent: Port = 5051
    etcd_client: Port = 2379
    etcd_peer: Port = 2380

    @model_validator(mode="after")
    def _distinct(self) -> Ports:
        values = [self.api, self.agent, self.etcd_client, self.etcd_peer]
        if len(set(values)) != len(values):
            raise ValueError("api, agent, etcd_client and etcd_peer must be four different ports")
        return self


class HostEntry(_Strict):
    name: str
    address: str | None = None
    advertise: str
    role: Role
    attributes: dict[str, str] = Field(default_factory=dict)
    host_volumes: dict[str, str] = Field(default_factory=dict)
    ssh: SshOptions = SshOptions()
    install: InstallOptions = InstallOptions()
    agent: AgentOptions = AgentOptions()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a name: [a-z0-9][a-z0-9.-]*, at most 63")
        return value

    @field_validator("advertise", "address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError("an IP address or a host name, without spaces")
        return value

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or "=" in key or any(c.isspace() for c in key):
                raise ValueError(f"attribute name {key!r}: no '=', no spaces")
        return value

    @field_validator("host_volumes")
    @classmethod
    def _volumes(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not VOLUME_NAME.match(name):
                raise ValueError(f"volume name {name!r}: [a-zA-Z0-9][a-zA-Z0-9_.-]*")
            if not path.startswith("/"):
                raise ValueError(f"volume {name!r}: {path!r} is not an absolute path")
        return value


class HostsDocument(_Strict):
    cluster: str
    ssh: SshOptions = SshOptions()
    ports: Ports = Ports()
    install: InstallOptions = InstallOptions()
    agent: AgentOptions = AgentOptions()
    server: ServerOptions = ServerOptions()
    hosts: list[HostEntry] = Field(min_length=1)

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        if not NAME.match(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a cluster name: [a-z0-9][a-z0-9.-]*")
        return value


class Host(BaseModel):
    """One host with every default applied and every path resolved: what the plan uses."""

    model_config = ConfigDict(frozen=True)

    name: str
    address: str  # where SSH reaches it
    advertise: str
    role: Role
    attributes: dict[str, str]
    host_volumes: dict[str, str]
    user: str
    port: int
    key: Path | None
    known_hosts: Path
    prefix: PurePosixPath
    docker_host: str
    agent: AgentOptions  # its agent's options, the file's with the host's own over them

    @property
    def is_server(self) -> bool:
        return self.role in ("server", "both")

    @property
    def is_agent(self) -> bool:
        return self.role in ("agent", "both")

    @property
    def sudo(self) -> bool:
        return self.user != "root"


class HostsFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    cluster: str
    ports: Ports
    server: ServerOptions  # every server's options
    hosts: tuple[Host, ...]

    @property
    def servers(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_server)

    @property
    def agents(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_agent)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


def field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's ``('hosts', 2, 'advertise')`` as the file's reader spells it:
    ``hosts[2].advertise``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(the file)"


def _message(error: Any) -> str:
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def _resolve_path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def resolve(document: HostsDocument, path: Path) -> HostsFile:
    """Defaults applied, paths resolved and the cross-host rules checked."""
    base = path.parent.resolve()
    problems: list[str] = []
    hosts: list[Host] = []
    names: dict[str, int] = {}
    advertised: dict[str, int] = {}
    for index, entry in enumerate(document.hosts):
        where = f"hosts[{index}]"
        if entry.name in names:
            problems.append(f"{where}.name: {entry.name!r} is also hosts[{names[entry.name]}]")
        names.setdefault(entry.name, index)
        if entry.advertise in advertised:
            other = advertised[entry.advertise]
            problems.append(f"{where}.advertise: {entry.advertise} is also hosts[{other}]'s")
        advertised.setdefault(entry.advertise, index)
        if entry.role == "server" and entry.agent != AgentOptions():
            problems.append(f"{where}.agent: role server runs no agent (role both does)")
        ssh = document.ssh.model_copy(update=entry.ssh.model_dump(exclude_none=True))
        install = document.install.model_copy(update=entry.install.model_dump(exclude_none=True))
        prefix = install.prefix or "/"
        prefix_path = PurePosixPath(str(_resolve_path(prefix, base)))
        hosts.append(
            Host(
                name=entry.name,
                address=entry.address or entry.advertise,
                advertise=entry.advertise,
                role=entry.role,
                attributes=dict(entry.attributes),
                host_volumes=dict(entry.host_volumes),
                user=ssh.user or "root",
                port=ssh.port or 22,
                key=_resolve_path(ssh.key, base) if ssh.key else None,
                known_hosts=_resolve_path(ssh.known_hosts or "~/.ssh/known_hosts", base),
                prefix=prefix_path,
                docker_host=install.docker_host or "unix:///var/run/docker.sock",
                agent=entry.agent.over(document.agent),
            )
        )
    servers = sum(1 for h in hosts if h.is_server)
    if servers not in SERVER_COUNTS:
        problems.append(
            f"hosts: {servers} server hosts (role server or both); etcd's static cluster needs "
            "1, 3 or 5"
        )
    if problems:
        raise HostsFileError(f"{path}:\n  " + "\n  ".join(problems))
    return HostsFile(
        path=path,
        cluster=document.cluster,
        ports=document.ports,
        server=document.server,
        hosts=tuple(hosts),
    )


def parse(text: str, path: Path) -> HostsFile:
    """The hosts file's text, validated; ``HostsFileError`` naming every bad field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HostsFileError(f"{path}: not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise HostsFileError(f"{path}: expected a mapping with cluster, hosts, ...")
    try:
        document = HostsDocument.model_validate(data)
    except ValidationError as exc:
        lines = [f"{field_path(e['loc'])}: {_message(e)}" for e in exc.errors()]
        raise HostsFileError(f"{path}:\n  " + "\n  ".join(lines)) from None
    return resolve(document, path)


def load(path: Path) -> HostsFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise HostsFileError(f"cannot read the hosts file {path}: {exc.strerror}") from None
    return parse(text, path)
