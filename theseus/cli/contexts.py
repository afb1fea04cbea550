"""The CLI's contexts (as kubeconfig's): which cluster to talk to, how to trust it and with
what token, so that ``theseus ps`` needs no flags after setup.

One JSON file, ``$THESEUS_CONFIG`` or ``$XDG_CONFIG_HOME/theseus/config.json`` (default
``~/.config/theseus/config.json``), mode 0600 because it holds tokens::

    {"current": "local-secure",
     "contexts": {"local-secure": {"servers": ["https://127.0.0.1:5000"],
                                   "ca": "-----BEGIN CERTIFICATE-----...", "token": "ths-..."}}}

Written by ``theseus up --secure`` and ``theseus context set``; read by every command through
``theseus.cli.output.CliState`` (flags and ``THESEUS_SERVER``/``THESEUS_TOKEN`` win over it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from theseus.security.files import write_private


class Context(BaseModel):
    servers: list[str]
    ca: str | None = None  # PEM of the cluster CA
    token: str | None = None


class ContextFile(BaseModel):
    current: str | None = None
    contexts: dict[str, Context] = Field(default_factory=dict)


class ContextError(ValueError):
    pass


def config_path() -> Path:
    explicit = os.environ.get("THESEUS_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "theseus" / "config.json"


def load(path: Path | None = None) -> ContextFile:
    path = path or config_path()
    try:
        return ContextFile.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return ContextFile()
    except (ValidationError, ValueError) as exc:
        raise ContextError(f"{path} is not a Theseus CLI configuration: {exc}") from None


def save(contexts: ContextFile, path: Path | None = None) -> Path:
    path = path or config_path()
    write_private(path, json.dumps(contexts.model_dump(), indent=2).encode() + b"\n")
    return path


def set_context(name: str, context: Context, make_current: bool = True) -> Path:
    contexts = load()
    contexts.contexts[name] = context
    if make_current or contexts.current is None:
        contexts.current = name
    return save(contexts)


def resolve(name: str | None) -> Context | None:
    """The named context, or the current one; None if there is none (``ContextError`` if a
    name was asked for and is not there)."""
    contexts = load()
    chosen = name or contexts.current
    if chosen is None:
        return None
    context = contexts.contexts.get(chosen)
    if context is None and name is not None:
        known = ", ".join(sorted(contexts.contexts)) or "none"
        raise ContextError(f"no context {name!r} in {config_path()} (known: {known})")
    return context
