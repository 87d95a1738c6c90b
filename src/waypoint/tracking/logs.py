"""train.py's log: one line per event on stderr, the run's whole story in ``<run_dir>/train.log``.

Modules log through ``logging.getLogger(__name__)`` under the ``waypoint`` logger. Until the run has passed
its checks the records are only held (and shown on stderr); ``attach_file`` then writes them, and everything
after, to ``train.log``. A refused command therefore leaves no trace in the run directory. Warnings raised by
library code (``warnings.warn``) are routed into the same log, under the logger of the module that raised them.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = "waypoint"
FILE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
_PREFIX = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "error: "}


class _ConsoleFormatter(logging.Formatter):
    """``message`` for info, ``warning: message`` / ``error: message`` above; no tracebacks on the console."""

    def format(self, record: logging.LogRecord) -> str:
        return _PREFIX.get(record.levelno, "") + record.getMessage()


class _Held(logging.Handler):
    """Keeps records until the run's log file exists."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _root() -> logging.Logger:
    return logging.getLogger(ROOT)


def _handler(kind: type) -> Any:
    return next((h for h in _root().handlers if type(h) is kind), None)


def start(console_level: int = logging.INFO) -> None:
    """Log to stderr and hold every record for ``train.log``; idempotent (each sweep job starts afresh)."""
    root = _root()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    for h in list(root.handlers):
        if isinstance(h, (logging.FileHandler, _Held)):
            root.removeHandler(h)
            h.close()
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(console_level)
        console.setFormatter(_ConsoleFormatter())
        root.addHandler(console)
    root.addHandler(_Held())
    warnings.showwarning = _show_warning


class _PeerFormatter(_ConsoleFormatter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def format(self, record: logging.LogRecord) -> str:
        return f"[rank {self.rank}] " + super().format(record)


def quiet_peer(rank: int) -> None:
    """A rank other than 0 under torchrun: only its warnings and errors reach stderr, prefixed with its rank;
    it never writes train.log (rank 0 tells the run's story)."""
    for h in list(_root().handlers):
        if isinstance(h, _Held):
            _root().removeHandler(h)
        elif type(h) is logging.StreamHandler:
            h.setLevel(logging.WARNING)
            h.setFormatter(_PeerFormatter(rank))


def attach_file(run_dir: Path) -> Path:
    """Append the held records and everything after them to ``<run_dir>/train.log``; returns its path."""
    root = _root()
    path = Path(run_dir) / "train.log"
    held = _handler(_Held)
    if _handler(logging.FileHandler) is not None:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(path, mode="a", encoding="utf-8")
    fh.setLevel(logging.DEBUG)
    fh.setFormatter(logging.Formatter(FILE_FORMAT))
    if held is not None:
        root.removeHandler(held)
        for record in held.records:
            fh.handle(record)
    root.addHandler(fh)
    return path


def stop() -> None:
    """Flush and close train.log (the console handler stays)."""
    root = _root()
    for h in list(root.handlers):
        if isinstance(h, (logging.FileHandler, _Held)):
            root.removeHandler(h)
            h.close()


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None
) -> None:
    """``warnings.showwarning`` replacement: a warning becomes a log record of the module that raised it."""
    module = _module_of(filename)
    logging.getLogger(module).warning(str(message))


def _module_of(filename: str) -> str:
    parts = Path(filename).with_suffix("").parts
    if ROOT in parts:
        return ".".join(parts[len(parts) - 1 - parts[::-1].index(ROOT) :])
    return f"{ROOT}.warnings"
