"""Health checks as written in a deploy document: Marathon's ``healthChecks``.

Owns the shape, the defaults and the validation of one check (``deploy.<service>.health_checks``
or, in a pod, ``deploy.<service>.containers.N.health_checks``). The agent runs them next to the
task (``theseus.agent.health``); the leader only reads the outcome the agent reports, so an
overloaded leader can never mistake its own slowness for dead tasks (Marathon's mass-kill
lesson: a leader whose own load made every check time out killed services en masse).

Keys are accepted in Theseus's snake_case and in Marathon's camelCase (``gracePeriodSeconds``);
Marathon's ``MESOS_HTTP``/``MESOS_TCP`` mean HTTP/TCP, and its ``command: {"value": ...}`` is
accepted beside a plain string. Defaults are Marathon's:

==========================  ========  ======================================================
key                         default   meaning
==========================  ========  ======================================================
protocol                    HTTP      HTTP (passes on 200-399), TCP (connects), COMMAND (exit 0)
path                        /         HTTP only
port_name / port_index      index 0   which of the group's ``ports`` (HTTP and TCP)
command                     none      COMMAND only: a shell command run inside the container
grace_period_seconds        300       failures are ignored this long after the start, or
                                      until the first success
interval_seconds            60        time between two checks
timeout_seconds             20        a check that takes longer fails
max_consecutive_failures    3         failures in a row before the task is killed and
                                      replaced; 0 never kills
ignore_http1xx              false     HTTP: a 1xx answer is ignored rather than failing
==========================  ========  ======================================================
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.alias_generators import to_camel

# Marathon's camelCase keys are accepted beside snake_case; errors name the key as written.
MARATHON_KEYS = ConfigDict(
    extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
)

_PROTOCOL_ALIASES = {"MESOS_HTTP": "HTTP", "MESOS_TCP": "TCP"}

Protocol = Literal["HTTP", "TCP", "COMMAND"]


class HealthCheck(BaseModel):
    """One health check of a task (or of one container of a pod)."""

    model_config = MARATHON_KEYS

    protocol: Protocol = "HTTP"
    path: Annotated[StrictStr, Field(pattern=r"^/")] = "/"
    port_name: StrictStr | None = None
    port_index: Annotated[StrictInt, Field(ge=0)] | None = None
    command: Annotated[StrictStr, Field(min_length=1)] | None = None
    grace_period_seconds: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    timeout_seconds: Annotated[float, Field(gt=0, le=86_400)] = 20.0
    max_consecutive_failures: Annotated[StrictInt, Field(ge=0, le=10_000)] = 3
    ignore_http1xx: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _marathon_spellings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if v is not None}
        protocol = data.get("protocol")
        if isinstance(protocol, str):
            protocol = protocol.upper()
            data["protocol"] = _PROTOCOL_ALIASES.get(protocol, protocol)
        command = data.get("command")
        if isinstance(command, dict) and set(command) == {"value"}:
            data["command"] = command["value"]  # Marathon: {"command": {"value": "..."}}
        return data

    @model_validator(mode="after")
    def _fields_fit_protocol(self) -> HealthCheck:
        if self.protocol == "COMMAND":
            if self.command is None:
                raise ValueError("command: required when protocol is COMMAND")
            if self.port_name is not None or self.port_index is not None:
                raise ValueError("port_name: a COMMAND check has no port")
        elif self.command is not None:
            raise ValueError(f"command: only a COMMAND check has one, not {self.protocol}")
        if self.port_name is not None and self.port_index is not None:
            raise ValueError("port_name: give either port_name or port_index, not both")
        return self

    def port(self, ports: dict[str, int]) -> str | None:
        """The name of the group port an HTTP or TCP check probes (``None`` for COMMAND)."""
        if self.protocol == "COMMAND":
            return None
        if self.port_name is not None:
            return self.port_name
        names = list(ports)
        index = self.port_index or 0
        return names[index] if index < len(names) else None


def check_ports(checks: list[HealthCheck], ports: dict[str, int]) -> str | None:
    """Why a check cannot find its port among the group's ``ports``, or ``None``."""
    for index, check in enumerate(checks):
        if check.protocol == "COMMAND":
            continue
        if not ports:
            return f"{index}: a {check.protocol} check needs a port; the group declares none"
        if check.port_name is not None and check.port_name not in ports:
            known = ", ".join(sorted(ports))
            return f"{index}.port_name: {check.port_name!r} is not one of the ports ({known})"
        if check.port_index is not None and check.port_index >= len(ports):
            return f"{index}.port_index: {check.port_index} but the group has {len(ports)} ports"
    return None
