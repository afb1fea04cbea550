"""Field types shared by the deploy document's models (``spec``, ``pods``, ``health``).

Owns the patterns and conversions of names, environment values and volume strings, so that a
group and a pod member validate them the same way.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt, StrictStr, ValidationInfo

from theseus.model.hostgates import HOST_VOLUME_FLAG, host_path_message, parse_volume

SERVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
PORT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# ``parse_deploy_document`` validates with this context: a document a user sends may not carry
# a host path (a stored record, written before the gates existed, still reads back).
GATED = {"gates": True}

ServiceName = Annotated[str, Field(pattern=SERVICE_NAME_PATTERN)]
PortName = Annotated[str, Field(pattern=PORT_NAME_PATTERN)]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
PortNumber = Annotated[StrictInt, Field(ge=1, le=65535)]
# When the agent pulls an image that names a registry host (``theseus.agent.drivers.
# docker_pull``): only when the node lacks it (the default), or at every start.
PullPolicy = Literal["if_not_present", "always"]

# How long an agent that reaches no server keeps a group's tasks running before it stops them
# (``theseus.agent.fencing``): seconds, or ``never``. 30 s by default: the server declares a
# silent node lost after 3 s and replaces its tasks about a second later, so a cut-off node's
# group runs more than ``instances`` for at most ~26 s; a leader failover or a server restart
# (a few seconds) stays well inside it.
NEVER: Literal["never"] = "never"
STOP_AFTER_SERVER_LOSS_DEFAULT = 30.0
STOP_AFTER_SERVER_LOSS_RANGE = (1.0, 86_400.0)


def _server_loss_delay(value: object) -> object:
    """A number of seconds in range, or ``never`` (0 or a negative number is refused rather
    than read as "at once" or "never": the reader of a spec could take it for either)."""
    low, high = STOP_AFTER_SERVER_LOSS_RANGE
    expected = f"must be a number of seconds ({low:g} to {high:g}) or '{NEVER}'"
    if value == NEVER:
        return NEVER
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{expected}, not {value!r}")
    if math.isnan(value) or not low <= value <= high:
        raise ValueError(f"{expected}, not {value!r}")
    return float(value)


ServerLossDelay = Annotated[float | Literal["never"], BeforeValidator(_server_loss_delay)]


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


def check_volume(volume: str, info: ValidationInfo) -> str:
    """One ``NAME:/container/path[:ro|rw]``. A host path as its source is refused when the
    document comes from a user (``GATED`` context): no node may be allowed to mount one; the
    node's operator declares a named host volume instead (``theseus.model.hostgates``)."""
    mount = parse_volume(volume)
    if mount is None:
        raise ValueError(
            f"volume {volume!r} must look like NAME:/container/path[:ro|rw], NAME a host volume "
            f"the node declares ({HOST_VOLUME_FLAG})"
        )
    if mount.is_host_path and info.context is not None and info.context.get("gates"):
        raise ValueError(host_path_message(volume, mount.source))
    return volume


Volume = Annotated[StrictStr, AfterValidator(check_volume)]
