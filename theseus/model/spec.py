"""The deploy document: the original Theseus's ``deploy:``/``remove:`` format, validated.

Owns parsing of the raw document (JSON or YAML text, or an already decoded object) into typed
``GroupSpec``s, and the error report that names the path of every bad field. Called by the
server's ``POST /deploy`` route and by the CLI (to fail fast before sending).

Deviations from the original Theseus's parser, all deliberate:

* Unknown keys are rejected with the key's path instead of being stored verbatim, so that a
  typo such as ``cpu`` (singular, silently ignored by the original) is reported.
* ``labels`` is optional (the empty label set is a group of its own); the original crashed.
* JSON ``true``/``false``/``null`` are accepted (the original used ``ast.literal_eval``).
* Environment values may be strings, numbers, booleans or null; they are stored and passed to
  the container as strings (booleans as ``true``/``false``, null as the empty string).
* ``null`` on any optional key means its default, exactly as if the key were absent.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from theseus.model.constraints import Constraint
from theseus.model.fields import (
    GATED,
    STOP_AFTER_SERVER_LOSS_DEFAULT,
    EnvName,
    EnvValue,
    PortName,
    PortNumber,
    PullPolicy,
    ServerLossDelay,
    ServiceName,
    Volume,
)
from theseus.model.health import MARATHON_KEYS, HealthCheck, check_ports
from theseus.model.hostgates import cap_problem, normalise_cap
from theseus.model.logs import LogOptions
from theseus.model.pods import ContainerSpec, check_members


class SpecError(ValueError):
    """A deploy document is invalid. ``errors`` holds one ``{path, message}`` per bad field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        super().__init__(f"invalid deploy document: {summary}")


class UpgradeStrategy(BaseModel):
    """Marathon's ``upgradeStrategy``: how many tasks may be down or extra during a rollout,
    plus Nomad's ``progress_deadline`` and ``auto_revert``.

    Marathon defaults ``maximum_over_capacity`` to 1.0 (a full side-by-side copy); Theseus
    defaults it to 0.0, which (by Marathon's own "+1" rule) replaces one task at a time, the
    way the original Theseus did, and needs only one task's worth of spare capacity.

    A deployment fails when ``progress_deadline_seconds`` pass without one more new task
    becoming healthy (the clock restarts at each one, as Nomad's does); it then returns to the
    previous spec version unless ``auto_revert`` is false. Marathon deployments could hang
    forever instead.
    """

    model_config = MARATHON_KEYS

    minimum_health_capacity: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    maximum_over_capacity: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    progress_deadline_seconds: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    auto_revert: StrictBool = True


class GroupSpec(BaseModel):
    """One labeled group's desired state, as written under ``deploy.<service>``."""

    model_config = MARATHON_KEYS

    # A pod (``theseus.model.pods``): several containers as one task, sharing its network.
    # Declared before ``image``, whose check reads it.
    containers: list[ContainerSpec] | None = None
    # A single-container task names its ``image``; a pod lists its ``containers`` instead.
    image: Annotated[StrictStr | None, Field(min_length=1, validate_default=True)] = None
    labels: list[StrictStr] = Field(default_factory=list)
    ports: dict[PortName, PortNumber] = Field(default_factory=dict)
    environment: dict[EnvName, EnvValue] = Field(default_factory=dict)
    instances: Annotated[StrictInt, Field(ge=0, le=100_000)] = 1
    cpus: Annotated[float, Field(gt=0, le=1024)] = 0.3
    mem: Annotated[float, Field(gt=0, le=4_194_304)] = 512
    volumes: list[Volume] = Field(default_factory=list)
    command: StrictStr | None = None
    args: list[StrictStr] | None = None
    upgrade_strategy: UpgradeStrategy = Field(default_factory=UpgradeStrategy)
    backoff_seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0
    backoff_factor: Annotated[float, Field(ge=1, le=10)] = 2.0
    max_launch_delay_seconds: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    task_kill_grace_period_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0
    # An agent that has reached no server for this long stops the group's tasks on its node
    # (it fences itself: the servers have declared the node lost and replaced them), so that
    # a cut-off node runs a group beside its replacements only that long; ``never`` for a
    # group that must ride out any outage of the servers (Nomad's ``stop_on_client_after``).
    stop_after_server_loss_seconds: ServerLossDelay = STOP_AFTER_SERVER_LOSS_DEFAULT
    # Docker's init (tini) as each container's PID 1: it passes signals on and reaps
    # zombies, so a ``command`` (``sh -c``, which as PID 1 would ignore SIGTERM) stops at
    # once, even before it set a trap. false for images whose own process must be PID 1.
    init: StrictBool = True
    # When the agent pulls the image (one that names a registry host, or any with the agent's
    # --pull-unqualified): only when its node lacks it, or at every start. A pod's member may
    # set its own.
    pull: PullPolicy = "if_not_present"
    # Restart a task that died on the node it ran on, as long as that node is alive; move it
    # only when the node is lost or drained (the original's ``custom_constraints: fixed-host``
    # intent, which it never implemented; Nomad's ``restart`` vs. ``reschedule``).
    sticky: StrictBool = False
    # Where tasks may go (Marathon's operators, ``theseus.model.constraints``) and how the
    # feasible nodes are ranked: spread over nodes (default) or binpack onto the fullest.
    constraints: list[Constraint] = Field(default_factory=list)
    placement_strategy: Literal["spread", "binpack"] = "spread"
    # Agent-run checks (``theseus.model.health``): a task with checks counts, and is in the
    # registry, only while they pass.
    health_checks: list[HealthCheck] = Field(default_factory=list)
    # Services this one needs (Marathon ``dependencies``; the original's wish for docker
    # ``links``): they are started first and stopped last.
    dependencies: list[ServiceName] = Field(default_factory=list)
    # What the task may do to its host (Docker Compose's names), for every container of the
    # task: each runs only on a node whose agent allows it (``theseus.model.hostgates``).
    privileged: StrictBool = False  # --allow-privileged
    network_mode: Literal["bridge", "host"] = "bridge"  # host: --allow-host-namespaces
    pid_mode: Literal["private", "host"] = "private"  # host: --allow-host-namespaces
    cap_add: list[StrictStr] = Field(default_factory=list)  # beyond Baseline: --allow-cap
    # How much output each container keeps (``theseus.model.logs``); a key left out, the
    # agent's --log-max-size / --log-max-files.
    logs: LogOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        # JSON null (YAML ~) on an optional key means "the default", as an absent key does.
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if v is not None}
            if "custom_constraints" in data:
                data = _translate_custom_constraints(data)
            if "links" in data:
                data = _translate_links(data)
        return data

    @field_validator("labels")
    @classmethod
    def _labels_printable(cls, labels: list[str]) -> list[str]:
        for label in labels:
            if not label or not label.isprintable():
                raise ValueError(f"label {label!r} must be a non-empty printable string")
        return sorted(set(labels))

    @field_validator("cap_add")
    @classmethod
    def _known_caps(cls, caps: list[str]) -> list[str]:
        names = sorted({normalise_cap(cap) for cap in caps})
        for name in names:
            problem = cap_problem(name)
            if problem is not None:
                raise ValueError(problem)
        return names

    @field_validator("image")
    @classmethod
    def _image_unless_pod(cls, image: str | None, info: ValidationInfo) -> str | None:
        # A field check, not a whole-model one, so that it is reported with every other bad
        # field. A pod whose ``containers`` are themselves invalid is not blamed twice.
        # (Failed ``containers`` are missing from ``info.data``; valid ones are there.)
        if image is None and "containers" in info.data and info.data["containers"] is None:
            raise ValueError("required (or 'containers', for a pod)")
        return image

    @field_validator("dependencies")
    @classmethod
    def _dependencies_unique(cls, dependencies: list[str]) -> list[str]:
        return sorted(set(dependencies))

    @model_validator(mode="after")
    def _command_or_args(self) -> GroupSpec:
        if self.command is not None and self.args is not None:
            raise ValueError("give either 'command' (a shell string) or 'args' (a list), not both")
        if self.containers is not None:
            self._check_pod(self.containers)
        for checks, where in self._all_health_checks():
            problem = check_ports(checks, self.ports)
            if problem is not None:
                raise ValueError(f"{where}.{problem}")
        return self

    def _check_pod(self, containers: list[ContainerSpec]) -> None:
        for key in ("image", "command", "args"):
            if getattr(self, key) is not None:
                raise ValueError(f"{key}: a pod sets it on each of its containers")
        problem = check_members(containers)
        if problem is not None:
            raise ValueError(problem)
        # A pod's resources are its members' sums; a stored spec carries them, and they
        # must still agree when it is read back.
        totals = {
            "cpus": round(sum(c.cpus for c in containers), 6),
            "mem": round(sum(c.mem for c in containers), 6),
        }
        for key, total in totals.items():
            if key in self.model_fields_set and round(getattr(self, key), 6) != total:
                raise ValueError(
                    f"{key}: a pod's {key} is the sum of its containers' ({total}); "
                    "set it on each container"
                )
            object.__setattr__(self, key, total)  # frozen: set once, while validating

    def _all_health_checks(self) -> list[tuple[list[HealthCheck], str]]:
        found = [(self.health_checks, "health_checks")]
        for index, container in enumerate(self.containers or []):
            found.append((container.health_checks, f"containers.{index}.health_checks"))
        return found

    @property
    def has_health_checks(self) -> bool:
        """Whether a task of this spec counts only once the agent reports it healthy. Asked
        for every task on every reconcile pass (the registry): no list is built."""
        if self.health_checks:
            return True
        return self.containers is not None and any(c.health_checks for c in self.containers)

    @property
    def images(self) -> list[str]:
        """Every image a task of this spec runs (one, or a pod's members')."""
        if self.containers is not None:
            return [c.image for c in self.containers]
        return [self.image] if self.image is not None else []

    def version(self) -> str:
        """A digest of everything that changes a running container: tasks of another version
        get replaced. ``instances``, ``sticky``, ``upgrade_strategy`` and ``dependencies`` only
        steer the orchestrator, ``pull`` only how an image reaches the node (it applies at
        the next start) and ``stop_after_server_loss_seconds`` only what an agent cut off
        from the servers does (it applies to the tasks started after the change), so changing
        them restarts nothing."""
        excluded = {"instances", "sticky", "upgrade_strategy", "dependencies", "pull"}
        excluded.add("stop_after_server_loss_seconds")
        # A key at its default leaves the digest as it was before the key existed: an
        # upgraded server must not replace every running task.
        excluded |= {
            key for key, default in _DIGEST_DEFAULTS.items() if getattr(self, key) == default
        }
        exclude: dict[str, Any] = dict.fromkeys(excluded, True)
        if self.containers is not None:
            exclude["containers"] = {"__all__": {"pull"}}
        body = self.model_dump(mode="json", exclude=exclude)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# Keys added after specs were first stored, and their defaults (see ``GroupSpec.version``).
_DIGEST_DEFAULTS: dict[str, object] = {
    "init": True,
    "privileged": False,
    "network_mode": "bridge",
    "pid_mode": "private",
    "cap_add": [],
    "logs": None,
}


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


def _translate_links(data: dict[str, Any]) -> dict[str, Any]:
    """``links`` (the original's wish for docker links) is another name for
    ``dependencies``: the linked services start first; they find each other through the
    registry, as every service does."""
    data = dict(data)
    links = data.pop("links")
    if "dependencies" in data:
        raise ValueError("links: give either 'links' or 'dependencies', not both")
    data["dependencies"] = links
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
_ALIAS_KEYS = {"custom_constraints", "links"}  # the original's keys, accepted and translated
# A whole-model check that blames one key says so first ("key: why", "key.0.sub: why").
_BLAMABLE_KEYS = _ALIAS_KEYS | set(GroupSpec.model_fields) | set(HealthCheck.model_fields)


# libyaml's loader when PyYAML has it: 5 times faster than the pure-Python one, same results.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_document_text(text: str | bytes) -> Any:
    """Decode JSON or YAML text. YAML is a superset of JSON, so one parser reads both; JSON is
    tried first only because its parser is a hundred times faster (a document of some MiB)."""
    with contextlib.suppress(ValueError, RecursionError):  # YAML then, or neither
        return json.loads(text, parse_constant=_not_json)
    try:
        return yaml.load(text, Loader=_YAML_LOADER)  # a safe loader: plain data only
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: text that is not Unicode
        message = f"not valid JSON or YAML: {exc}"
    except RecursionError:
        message = "not valid JSON or YAML: nested too deeply"
    raise SpecError([{"path": "(document)", "message": message}]) from None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")  # NaN and Infinity: let YAML read them


def parse_deploy_document(raw: Any) -> DeployDocument:
    """Validate a decoded document; raise ``SpecError`` naming each bad field's path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(
            [{"path": "(document)", "message": "must be a mapping with 'deploy' and/or 'remove'"}]
        )
    try:
        # GATED: what no node may allow (a host path) is refused here, with its path.
        return DeployDocument.model_validate(raw, context=GATED)
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
        if sep and field.split(".")[0] in _BLAMABLE_KEYS and " " not in field:
            path, message = f"{path}.{field}", rest
    return {"path": path, "message": message}
