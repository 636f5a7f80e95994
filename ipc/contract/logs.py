"""How every process of a pool logs: one line per event, as text for people or JSON for machines.

Both sides use it, so the supervisor's and the workers' lines look alike: text is
``HH:MM:SS <who> LEVEL message``, where a worker's ``<who>`` names its slot and pid; JSON is one
object per line with ``time`` (ISO 8601, UTC), ``level``, ``logger``, who wrote it (``process``,
and a worker's ``slot`` and ``pid``), ``message``, any structured fields the line carries (an
access log line's method, path, status and duration), and ``exception`` when there is one.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from typing import Any

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")

#: What every LogRecord has: the rest of a record's attributes are the line's own fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def check_format(name: str) -> None:
    if name not in FORMATS:
        raise ValueError(f"must be one of {', '.join(FORMATS)}, not {name!r}")


def check_level(name: str) -> None:
    if name not in LEVELS:
        raise ValueError(f"must be one of {', '.join(LEVELS)}, not {name!r}")


class JSONFormatter(logging.Formatter):
    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__()
        self._fields = fields

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            **self._fields,
            "message": record.getMessage(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is when a line is written, as ``logging.lastResort`` does,
    not to the stream it was given once. ``supervisor.cli.main`` runs in-process in the tests,
    where pytest swaps ``sys.stderr`` for a capture file per test and closes it after: a handler
    bound to that file printed a "--- Logging error --- ValueError: I/O operation on closed file"
    traceback for every later line (1,409 of them in one loaded run of the suite). With no
    stderr at all (``pythonw``, a closed descriptor) a line is dropped, not turned into one."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # StreamHandler.setStream would rebind it: there is nothing to rebind

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr
        if stream is None or getattr(stream, "closed", False):
            return
        super().emit(record)


def configure(log_format: str, level: str, who: str, **fields: Any) -> None:
    """Send every line of this process to stderr in ``log_format``; ``who`` names the process in
    text lines, ``fields`` (``process``, ``slot``, ``pid``...) in JSON ones."""
    handler = StderrHandler()
    if log_format == "json":
        handler.setFormatter(JSONFormatter(fields))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {who} %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def to_file(path: str) -> None:
    """This process's standard output and error appended to ``path``, and so its children's,
    which inherit them (on Windows the C runtime's ``dup2`` sets the process's standard handles,
    which ``subprocess`` gives a child)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for std in (1, 2):
            os.dup2(fd, std)
    finally:
        os.close(fd)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
