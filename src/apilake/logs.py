"""Log lines: human text on a terminal, JSON lines for log shippers; each carries the run id.

Every line passes through the redactor at the handler, so no code path can log a secret, and
through `printable`, so no server can forge a line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import sys
from contextvars import ContextVar

from apilake.printable import printable
from apilake.redact import Redactor

run_id: ContextVar[str] = ContextVar("run_id", default="-")
_redact: list[Redactor] = [Redactor()]


class _Formatter(logging.Formatter):
    def __init__(self, json_lines: bool) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        message = printable(record.getMessage())  # one line per record, whatever a server sent
        if record.exc_info:  # a traceback keeps its own lines
            message += "\n" + "\n".join(printable(line) for line in self.formatException(record.exc_info).split("\n"))
        message = _redact[0](message)  # before JSON escaping, which would hide a secret from the redactor
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        if self.json_lines:
            return json.dumps(
                {
                    "time": when.isoformat(timespec="milliseconds"),
                    "level": record.levelname.lower(),
                    "run_id": run_id.get(),
                    "logger": record.name,
                    "message": message,
                }
            )
        return f"{when:%Y-%m-%d %H:%M:%S} {record.levelname:<7} [{run_id.get()}] {message}"


def set_secrets(secrets: list[str]) -> None:
    _redact[0] = Redactor(secrets)


def setup(*, fmt: str = "text", level: int = logging.INFO, log_file: str | None = None) -> None:
    """Configure the `apilake` logger: stderr, plus a daily-rotated file when asked."""
    logger = logging.getLogger("apilake")
    logger.handlers.clear()
    logger.setLevel(level)
    logger.propagate = False
    formatter = _Formatter(json_lines=fmt == "json")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.handlers.TimedRotatingFileHandler(log_file, when="midnight", backupCount=30, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
