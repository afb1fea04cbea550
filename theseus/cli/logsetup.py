"""Logging of Theseus's own long-running processes (``theseus server``, ``theseus agent``).

``configure_logging`` replaces ``logging.basicConfig``: to stderr as before, or, given a file,
to that file rotated by size (``logging.handlers.RotatingFileHandler``: at ``max_bytes`` the
file becomes ``FILE.1``, ``FILE.1`` becomes ``FILE.2``..., and only ``backups`` of them are
kept, so the logs take at most ``(backups + 1) * max_bytes`` bytes). Two formats:

* ``text``: ``2026-12-04 11:35:00,123 INFO theseus.server.app: ...``, as before;
* ``json``: one JSON object per line, for log shippers: ``time`` (UTC, ISO 8601 with
  milliseconds), ``level``, ``logger``, ``message`` and, when there is one, ``exception`` (the
  formatted traceback).

Both formats pass every line through ``theseus.security.tokens.redact_tokens``: a token's
secret never reaches a log, even one a message or a traceback quotes by mistake. Uncaught
exceptions are logged too (``sys.excepthook``), so that a crash is in the rotated file and
not only on a stderr nobody keeps.

Called by ``theseus.cli.server_cmd`` and ``theseus.cli.agent_cmd``; docs/observability.md.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from pathlib import Path
from types import TracebackType

import typer

from theseus.security.tokens import redact_tokens

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_BACKUPS = 5


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact_tokens(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact_tokens(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact_tokens(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact_tokens(record.exc_text)
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    if log_format not in FORMATS:
        raise ValueError(f"the log format is one of {', '.join(FORMATS)}, not {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(
    level: str,
    log_file: Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    backups: int = DEFAULT_BACKUPS,
    log_format: str = "text",
) -> logging.Handler:
    """Send the root logger's records at ``level`` and above to stderr, or to ``log_file``
    rotated; the handler installed (replacing any the root logger had)."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler()
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    if log_file is not None:
        sys.excepthook = _log_uncaught
    return handler


LOG_FILE_HELP = (
    "Write the log to this file instead of stderr, rotated by size (--log-max-bytes, "
    "--log-backups)."
)
LOG_MAX_BYTES_HELP = "With --log-file: the size at which the file is rotated, in bytes."
LOG_BACKUPS_HELP = "With --log-file: how many rotated files (FILE.1, FILE.2...) are kept."
LOG_FORMAT_HELP = "text, or json: one JSON object per line (time, level, logger, message)."


def start_logging(
    level: str, log_file: Path | None, max_bytes: int, backups: int, log_format: str
) -> None:
    """``configure_logging`` from a command's options; a bad ``--log-format`` is refused."""
    if log_format not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--log-format")
    try:
        configure_logging(level, log_file, max_bytes, backups, log_format)
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot write {log_file}: {exc}", param_hint="--log-file"
        ) from None


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    logging.getLogger("theseus").critical("uncaught exception", exc_info=(kind, error, traceback))
    sys.__excepthook__(kind, error, traceback)
