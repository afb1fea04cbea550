"""How much of a task's output is kept: the ``logs:`` key of a group and the agent's default.

Owns the size notation (``10m``, ``512k``, ``1g``, or a number of bytes; binary units, as
Docker's ``max-size``), the ``logs: {max_size, max_files}`` model of a deploy document, and
``LogLimits``, the bound a driver applies to one task: at most ``max_files`` files of at most
``max_bytes`` each, the oldest dropped first. A key the spec leaves out is the agent's
(``theseus agent --log-max-size/--log-max-files``). Pure; read by ``theseus.model.spec``, the
agent's command line and its drivers (``docker``: Docker's json-file options; ``process``:
``theseus.agent.drivers.process_logs``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)
MIN_LOG_SIZE = 1024  # a smaller file would rotate at every line
MAX_LOG_SIZE = 100 * 1024**3
MAX_LOG_FILES = 100
DEFAULT_MAX_SIZE = "10m"
DEFAULT_MAX_FILES = 3
SIZE_HELP = "a size such as 10m, 512k, 1g or a number of bytes"


def parse_size(text: str | int) -> int:
    """Bytes from ``10m`` (``10M``, ``10mb``, ``10MiB``), ``512k``, ``1g`` or ``2048``;
    ``ValueError`` saying what is expected, and the bounds."""
    if isinstance(text, bool):
        raise ValueError(f"must be {SIZE_HELP}, not {text!r}")
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"must be {SIZE_HELP}, not {text!r}")
        number, unit = match.groups()
        value = int(float(number) * _UNITS[unit.lower()])
    if not MIN_LOG_SIZE <= value <= MAX_LOG_SIZE:
        raise ValueError(f"must be between 1k and 100g, not {text!r}")
    return value


def _size_text(value: object) -> object:
    """A valid size, kept as written (a number as its digits), so that the spec reads back
    as the user wrote it; pydantic's type check reports anything else."""
    if isinstance(value, str | int):
        parse_size(value)
        return str(value).strip()
    return value


LogSize = Annotated[str, BeforeValidator(_size_text)]
LogFiles = Annotated[StrictInt, Field(ge=1, le=MAX_LOG_FILES)]


class LogOptions(BaseModel):
    """``deploy.<service>.logs``: the group's own bound (each key left out is the agent's).
    For a pod, every member's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_size: LogSize | None = None  # one file's size, e.g. 10m
    max_files: LogFiles | None = None  # files kept, the one being written included


@dataclass(frozen=True)
class LogLimits:
    """The bound of one container's (or process's) logs: ``max_files`` files of at most
    ``max_bytes`` each, so at most ``max_bytes * max_files`` on disk."""

    max_bytes: int = parse_size(DEFAULT_MAX_SIZE)
    max_files: int = DEFAULT_MAX_FILES

    @classmethod
    def of(cls, max_size: str | int, max_files: int) -> LogLimits:
        """From the agent's options; ``ValueError`` naming what is wrong."""
        if not 1 <= max_files <= MAX_LOG_FILES:
            raise ValueError(f"max files must be between 1 and {MAX_LOG_FILES}, not {max_files}")
        return cls(parse_size(max_size), max_files)

    def over(self, options: LogOptions | None) -> LogLimits:
        """The spec's ``logs`` over these (the agent's default), key by key."""
        if options is None:
            return self
        return LogLimits(
            parse_size(options.max_size) if options.max_size is not None else self.max_bytes,
            options.max_files if options.max_files is not None else self.max_files,
        )

    def docker_log_config(self) -> dict[str, object]:
        """Docker's ``HostConfig.LogConfig``: the json-file driver (the Engine's own default,
        read by ``docker logs`` and the follow API across its rotations), bounded."""
        return {
            "Type": "json-file",
            "Config": {"max-size": str(self.max_bytes), "max-file": str(self.max_files)},
        }

    def describe(self) -> str:
        """``10m × 3 files``: for ``theseus plan`` and the agent's log."""
        return f"{format_size(self.max_bytes)} × {self.max_files} files"


def describe_options(options: LogOptions | None) -> str:
    """A group's ``logs`` in words, for ``theseus plan``: what it sets, and what it leaves to
    each agent."""
    agents = "each agent's default"
    if options is None or (options.max_size is None and options.max_files is None):
        return f"{agents} (--log-max-size × --log-max-files)"
    size = options.max_size if options.max_size is not None else f"{agents} size"
    files = f"{options.max_files} files" if options.max_files is not None else f"{agents} files"
    return f"{size} × {files} per container"


def format_size(size: int) -> str:
    """``10485760`` → ``10m``; a size that is no whole unit in bytes."""
    for unit in ("g", "m", "k"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)
