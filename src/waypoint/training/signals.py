"""Signals become a flag; the training loop services it at the next step boundary (no I/O in handlers).

Exit codes of ``train.py`` (documented in README.md):

* 0   finished (or already finished)
* 1   an uncaught error (an ``emergency`` checkpoint was saved when training had started)
* 2   bad configuration or input (nothing was trained or changed)
* 3   the loss became non-finite (the newest checkpoint still holds the last good state)
* 75  preempted: SIGTERM, SIGUSR1 or a first Ctrl-C saved a ``preempt`` checkpoint (EX_TEMPFAIL: requeue me)
* 130 aborted by a second Ctrl-C (no save; committed checkpoints are intact)
"""
from __future__ import annotations

import signal
from types import FrameType
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NONFINITE, EXIT_PREEMPTED, EXIT_ABORTED = 0, 1, 2, 3, 75, 130
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class Aborted(BaseException):
    """A second Ctrl-C: leave at once, without saving."""


class StopFlag:
    """Installs handlers for SIGINT/SIGTERM/SIGUSR1 that only record the signal; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signum is not None

    @property
    def name(self) -> str:
        """The signal's name, e.g. ``SIGTERM``."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise Aborted()
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "StopFlag":
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
