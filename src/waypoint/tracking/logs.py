"""train.py's log: one line per event on stderr, the run's whole story in ``<run_dir>/train.log``.

Modules log under the ``waypoint`` logger. Until the run has passed its checks the records are only held (and
shown on stderr); ``attach_file`` then writes them, and everything after, to ``train.log``, so a refused command
leaves no trace in the run directory. Console lines go through ``tqdm.write``: never glued to a progress bar.
Warnings raised by library code (``warnings.warn``) become records of the module that raised them.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from tqdm import tqdm

ROOT = "waypoint"
FILE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
_PREFIX = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "error: "}


class _Console(logging.Handler):
    """``message`` for info, ``warning: message`` / ``error: message`` above (``[rank N]`` first on a peer rank);
    no tracebacks on the console."""

    def __init__(self, level: int, rank: int | None = None) -> None:
        super().__init__(level)
        self.rank = rank

    def emit(self, record: logging.LogRecord) -> None:
        peer = "" if self.rank is None else f"[rank {self.rank}] "
        tqdm.write(peer + _PREFIX.get(record.levelno, "") + record.getMessage(), file=sys.stderr)


class _Held(logging.Handler):
    """Keeps records until the run's log file exists."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _root() -> logging.Logger:
    return logging.getLogger(ROOT)


def _drop(*kinds: type) -> None:
    for h in [h for h in _root().handlers if isinstance(h, kinds)]:
        _root().removeHandler(h)
        h.close()


def start(console_level: int = logging.INFO) -> None:
    """Log to stderr and hold every record for ``train.log``; idempotent (each sweep job starts afresh)."""
    root = _root()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    _drop(logging.FileHandler, _Held, _Console)
    root.addHandler(_Console(console_level))
    root.addHandler(_Held())
    warnings.showwarning = _show_warning


def quiet_peer(rank: int) -> None:
    """A rank other than 0 under torchrun: only its warnings and errors reach stderr, prefixed with its rank;
    it never writes train.log (rank 0 tells the run's story)."""
    _drop(_Held, _Console)
    _root().addHandler(_Console(logging.WARNING, rank))


def attach_file(run_dir: Path) -> Path:
    """Append the held records and everything after them to ``<run_dir>/train.log``; returns its path."""
    path = Path(run_dir) / "train.log"
    if any(isinstance(h, logging.FileHandler) for h in _root().handlers):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(path, mode="a", encoding="utf-8")
    fh.setLevel(logging.DEBUG)
    fh.setFormatter(logging.Formatter(FILE_FORMAT))
    for held in [h for h in _root().handlers if isinstance(h, _Held)]:
        _root().removeHandler(held)
        for record in held.records:
            fh.handle(record)
    _root().addHandler(fh)
    return path


def stop() -> None:
    """Flush and close train.log (the console handler stays)."""
    _drop(logging.FileHandler, _Held)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any) -> None:
    """``warnings.showwarning`` replacement: a warning becomes a log record of the module that raised it."""
    parts = Path(filename).with_suffix("").parts
    module = ".".join(parts[len(parts) - 1 - parts[::-1].index(ROOT) :]) if ROOT in parts else f"{ROOT}.warnings"
    logging.getLogger(module).warning(str(message))
