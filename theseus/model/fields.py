"""Field types shared by the deploy document's models (``spec``, ``pods``, ``health``).

Owns the patterns and conversions of names, environment values and volume strings, so that a
group and a pod member validate them the same way.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field, StrictInt

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


def check_volumes(volumes: list[str]) -> list[str]:
    """``host:container[:ro|rw]`` with absolute paths, or a ``ValueError`` naming the bad one."""
    for volume in volumes:
        if not VOLUME_PATTERN.match(volume):
            raise ValueError(f"volume {volume!r} must look like /host/path:/container/path[:ro|rw]")
    return volumes
