"""Where everything lives on a host set up by ``theseus cluster bootstrap`` (pure paths).

Everything is under the host's ``install.prefix`` (``/`` on a real machine; a directory of its
own per host in a test bed whose hosts share one filesystem), in five directories that
``teardown`` removes whole: ``opt/theseus`` (the venv, the wheels, the installed build),
``etc/theseus`` (certificates, environment files), ``var/lib/theseus`` (etcd's data, the
agent's state, the record of installed packages), ``var/log/theseus`` and ``run/theseus``
(supervisors' pid files). Systemd units are the exception: ``/etc/systemd/system``, named per
cluster. Called by the plan, the fact gathering, status and teardown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

SERVICES = ("etcd", "server", "agent")


@dataclass(frozen=True)
class Layout:
    prefix: PurePosixPath
    cluster: str

    def _under(self, *parts: str) -> PurePosixPath:
        return self.prefix.joinpath(*parts)

    @property
    def opt(self) -> PurePosixPath:
        return self._under("opt", "theseus")

    @property
    def etc(self) -> PurePosixPath:
        return self._under("etc", "theseus")

    @property
    def lib(self) -> PurePosixPath:
        return self._under("var", "lib", "theseus")

    @property
    def log(self) -> PurePosixPath:
        return self._under("var", "log", "theseus")

    @property
    def run(self) -> PurePosixPath:
        return self._under("run", "theseus")

    @property
    def owned(self) -> tuple[PurePosixPath, ...]:
        """The directories this tool made and teardown removes whole."""
        return (self.opt, self.etc, self.lib, self.log, self.run)

    @property
    def venv(self) -> PurePosixPath:
        return self.opt / "venv"

    @property
    def python(self) -> PurePosixPath:
        return self.venv / "bin" / "python"

    @property
    def wheels(self) -> PurePosixPath:
        return self.opt / "wheels"

    @property
    def build_record(self) -> PurePosixPath:
        """The build (the wheelhouse's hash) installed in the venv."""
        return self.opt / "build"

    @property
    def pki(self) -> PurePosixPath:
        return self.etc / "pki"

    @property
    def packages_record(self) -> PurePosixPath:
        """The Debian packages this tool installed (one a line): teardown removes only those."""
        return self.lib / "installed-packages"

    @property
    def etcd_data(self) -> PurePosixPath:
        return self.lib / "etcd"

    @property
    def agent_state(self) -> PurePosixPath:
        return self.lib / "agent"

    @property
    def agent_cert(self) -> PurePosixPath:
        """Where the agent keeps the certificate it got at join (``theseus.agent.identity``):
        once it is there, the agent needs no join token."""
        return self.agent_state / "pki" / "agent.pem"

    def env_file(self, service: str) -> PurePosixPath:
        return self.etc / f"{service}.env"

    def started_record(self, service: str) -> PurePosixPath:
        """The configuration hash a service was last started with: a running service whose
        desired hash is another one is restarted."""
        return self.etc / f"{service}.started"

    def log_file(self, service: str) -> PurePosixPath:
        return self.log / f"{service}.log"

    def pidfile(self, service: str) -> PurePosixPath:
        """The supervisor's pid (no systemd); its child's is ``<service>.child.pid``."""
        return self.run / f"{service}.pid"

    def child_pidfile(self, service: str) -> PurePosixPath:
        return self.run / f"{service}.child.pid"

    def unit_name(self, service: str) -> str:
        return f"theseus-{self.cluster}-{service}.service"

    def unit_path(self, service: str) -> PurePosixPath:
        return PurePosixPath("/etc/systemd/system") / self.unit_name(service)
