"""The hosts file's ``agent:`` and ``server:`` blocks: the options a bootstrapped cluster's
agents and servers start with, each one a flag of ``theseus agent`` / ``theseus server`` of the
same meaning (docs/machines.md has the format).

Owns their model and their validation, with the flags' own limits and the capability
vocabulary of ``theseus.model.hostgates``; a key left out (``None``) is the process's own
default, so no flag is written for it. ``theseus.provision.hosts`` reads the blocks (a host's
``agent:`` overrides the file's key by key) and ``theseus.provision.services`` maps them onto
the launcher's ``AgentProcess`` and ``ServerProcess``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from theseus.model.hostgates import cap_problem, normalise_cap
from theseus.model.logs import MAX_LOG_FILES, parse_size


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentOptions(_Strict):
    """``theseus agent``'s image and host-gate options, and the resources it offers. At the
    file's top they are every agent's defaults; under a host they override them key by key (a
    host's ``allow_caps`` replaces the list, it does not add to it)."""

    pod_infra_image: str | None = None  # --pod-infra-image
    pull_unqualified: bool | None = None  # --pull-unqualified
    pull_timeout: float | None = Field(default=None, ge=1)  # --pull-timeout, seconds
    registry_login_cache: float | None = Field(default=None, ge=0)  # --registry-login-cache
    allow_privileged: bool | None = None  # --allow-privileged
    allow_host_namespaces: bool | None = None  # --allow-host-namespaces
    allow_caps: list[str] | None = None  # --allow-cap, each
    cpus: float | None = Field(default=None, gt=0)  # --cpus (default: the machine's)
    mem: float | None = Field(default=None, gt=0)  # --mem, MiB (default: the machine's)
    log_max_size: str | None = None  # --log-max-size, e.g. 10m
    log_max_files: int | None = Field(default=None, ge=1, le=MAX_LOG_FILES)  # --log-max-files

    @field_validator("pod_infra_image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError("an image name (REGISTRY/NAME:TAG), without spaces")
        return value

    @field_validator("log_max_size")
    @classmethod
    def _log_size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)  # ValueError: what a size looks like
        return value

    @field_validator("allow_caps")
    @classmethod
    def _caps(cls, value: list[str] | None) -> list[str] | None:
        """Normalised as ``theseus agent --allow-cap`` does (``cap_net_admin`` is
        ``NET_ADMIN``), so that two spellings of one list are one configuration."""
        if value is None:
            return None
        caps = sorted({normalise_cap(name) for name in value})
        problems = [problem for cap in caps if (problem := cap_problem(cap)) is not None]
        if problems:
            # The flag's words, in the file's: privileged containers are allowed here.
            text = "; ".join(problems).replace("--allow-privileged", "allow_privileged: true")
            raise ValueError(text)
        return caps

    def over(self, defaults: AgentOptions) -> AgentOptions:
        """These options over ``defaults``: each key given here wins, the others are the
        defaults'."""
        return defaults.model_copy(update=self.model_dump(exclude_none=True))


class ServerOptions(_Strict):
    """``theseus server``'s options, the same on every server host (the file's top only)."""

    liveness_timeout: int | None = Field(default=None, ge=2)  # --liveness-timeout, seconds
    agent_cert_days: float | None = Field(default=None, ge=0.0001)  # --agent-cert-days
