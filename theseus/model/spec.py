"""The deploy document: the original Theseus's ``deploy:``/``remove:`` format, validated.

Owns parsing of the raw document (JSON or YAML text, or an already decoded object) into typed
``GroupSpec``s, and the error report that names the path of every bad field. Called by the
server's ``POST /deploy`` route and by the CLI (to fail fast before sending).

Deviations from the original (``reference/original-system.md`` section 2.1), all deliberate:

* Unknown keys are rejected with the key's path instead of being stored verbatim, so that a
  typo such as ``cpu`` (singular, silently ignored by the original) is reported.
* ``labels`` is optional (the empty label set is a group of its own); the original crashed.
* JSON ``true``/``false``/``null`` are accepted (the original used ``ast.literal_eval``).
* Environment values may be strings, numbers, booleans or null; they are stored and passed to
  the container as strings (booleans as ``true``/``false``, null as the empty string).
* ``null`` on any optional key means its default, exactly as if the key were absent.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from theseus.model.constraints import Constraint

SERVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
PORT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
VOLUME_PATTERN = re.compile(r"^(?P<host>/[^:]*):(?P<container>/[^:]*)(?::(?P<mode>ro|rw))?$")

ServiceName = Annotated[str, Field(pattern=SERVICE_NAME_PATTERN)]
PortName = Annotated[str, Field(pattern=PORT_NAME_PATTERN)]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
PortNumber = Annotated[StrictInt, Field(ge=1, le=65535)]


def _env_string(value: object) -> str:
    """Environment values reach the container as strings; YAML/JSON scalars are converted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError("must be a string, a number or a boolean")


EnvValue = Annotated[str, BeforeValidator(_env_string)]


class SpecError(ValueError):
    """A deploy document is invalid. ``errors`` holds one ``{path, message}`` per bad field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        super().__init__(f"invalid deploy document: {summary}")


class UpgradeStrategy(BaseModel):
    """Marathon's ``upgradeStrategy``: how many tasks may be down or extra during a rollout.

    Marathon defaults ``maximum_over_capacity`` to 1.0 (a full side-by-side copy); Theseus
    defaults it to 0.0, which (by Marathon's own "+1" rule) replaces one task at a time, the
    way the original Theseus did, and needs only one task's worth of spare capacity.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimum_health_capacity: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    maximum_over_capacity: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0


class GroupSpec(BaseModel):
    """One labeled group's desired state, as written under ``deploy.<service>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: Annotated[StrictStr, Field(min_length=1)]
    labels: list[StrictStr] = Field(default_factory=list)
    ports: dict[PortName, PortNumber] = Field(default_factory=dict)
    environment: dict[EnvName, EnvValue] = Field(default_factory=dict)
    instances: Annotated[StrictInt, Field(ge=0, le=100_000)] = 1
    cpus: Annotated[float, Field(gt=0, le=1024)] = 0.3
    mem: Annotated[float, Field(gt=0, le=4_194_304)] = 512
    volumes: list[StrictStr] = Field(default_factory=list)
    command: StrictStr | None = None
    args: list[StrictStr] | None = None
    upgrade_strategy: UpgradeStrategy = Field(default_factory=UpgradeStrategy)
    backoff_seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0
    backoff_factor: Annotated[float, Field(ge=1, le=10)] = 2.0
    max_launch_delay_seconds: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    task_kill_grace_period_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0
    # Restart a task that died on the node it ran on, as long as that node is alive; move it
    # only when the node is lost or drained (the original's ``custom_constraints: fixed-host``
    # intent, which it never implemented; Nomad's ``restart`` vs. ``reschedule``).
    sticky: StrictBool = False
    # Where tasks may go (Marathon's operators, ``theseus.model.constraints``) and how the
    # feasible nodes are ranked: spread over nodes (default) or binpack onto the fullest.
    constraints: list[Constraint] = Field(default_factory=list)
    placement_strategy: Literal["spread", "binpack"] = "spread"

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        # JSON null (YAML ~) on an optional key means "the default", as an absent key does.
        if isinstance(data, dict):
            required = {"image"}
            data = {k: v for k, v in data.items() if v is not None or k in required}
            if "custom_constraints" in data:
                data = _translate_custom_constraints(data)
        return data

    @field_validator("labels")
    @classmethod
    def _labels_printable(cls, labels: list[str]) -> list[str]:
        for label in labels:
            if not label or not label.isprintable():
                raise ValueError(f"label {label!r} must be a non-empty printable string")
        return sorted(set(labels))

    @field_validator("volumes")
    @classmethod
    def _volumes_well_formed(cls, volumes: list[str]) -> list[str]:
        for volume in volumes:
            if not VOLUME_PATTERN.match(volume):
                raise ValueError(
                    f"volume {volume!r} must look like /host/path:/container/path[:ro|rw]"
                )
        return volumes

    @model_validator(mode="after")
    def _command_or_args(self) -> GroupSpec:
        if self.command is not None and self.args is not None:
            raise ValueError("give either 'command' (a shell string) or 'args' (a list), not both")
        return self

    def version(self) -> str:
        """A digest of everything but ``instances`` and ``sticky`` (neither changes a running
        container): tasks of another version get replaced."""
        body = self.model_dump(mode="json", exclude={"instances", "sticky"})
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _translate_custom_constraints(data: dict[str, Any]) -> dict[str, Any]:
    """The original's ``custom_constraints: fixed-host`` (or ``[fixed-host]``) means
    ``sticky: true``; it recognized no other value, and neither do we."""
    data = dict(data)
    value = data.pop("custom_constraints")
    values = value if isinstance(value, list) else [value]
    unknown = [v for v in values if v != "fixed-host"]
    if unknown:
        raise ValueError(
            f"custom_constraints: only 'fixed-host' is supported (got {unknown[0]!r}); "
            "it means sticky: true"
        )
    if values:
        data.setdefault("sticky", True)
    return data


class RemoveSpec(BaseModel):
    """``remove.<service>``: which group of the service to remove (``image`` is tolerated)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[StrictStr] = Field(default_factory=list)
    image: StrictStr | None = None

    @field_validator("labels")
    @classmethod
    def _labels_sorted(cls, labels: list[str]) -> list[str]:
        return sorted(set(labels))


class DeployDocument(BaseModel):
    """The whole request: deployments are applied before removals, atomically."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deploy: dict[ServiceName, GroupSpec] = Field(default_factory=dict)
    remove: dict[ServiceName, RemoveSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_group_both_deployed_and_removed(self) -> DeployDocument:
        for service, removal in self.remove.items():
            deployed = self.deploy.get(service)
            if deployed is not None and deployed.labels == removal.labels:
                raise ValueError(
                    f"remove.{service}: the same group is also deployed in this document"
                )
        return self


_KNOWN_GROUP_KEYS = sorted(GroupSpec.model_fields)
_ALIAS_KEYS = {"custom_constraints"}  # the original's keys, accepted and translated


def parse_document_text(text: str | bytes) -> Any:
    """Decode JSON or YAML text. YAML is a superset of JSON, so one parser reads both."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        message = f"not valid JSON or YAML: {exc}"
        raise SpecError([{"path": "(document)", "message": message}]) from None


def parse_deploy_document(raw: Any) -> DeployDocument:
    """Validate a decoded document; raise ``SpecError`` naming each bad field's path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(
            [{"path": "(document)", "message": "must be a mapping with 'deploy' and/or 'remove'"}]
        )
    try:
        return DeployDocument.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([_describe(error) for error in exc.errors()]) from None


def _describe(error: Any) -> dict[str, str]:
    location = [str(part) for part in error["loc"] if part != "[key]"]
    path = ".".join(location) or "(document)"
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        field = location[-1] if location else ""
        message = "unknown key"
        close = difflib.get_close_matches(field, _KNOWN_GROUP_KEYS, n=1)
        if close and len(location) == 3:
            message += f"; did you mean '{close[0]}'?"
    elif error["type"] == "missing":
        message = "required"
    elif error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
        # A whole-group check that blames one key names it first ("key: why"): say it in the
        # path, like every other field error.
        field, sep, rest = message.partition(": ")
        if sep and field in _ALIAS_KEYS:
            path, message = f"{path}.{field}", rest
    return {"path": path, "message": message}
