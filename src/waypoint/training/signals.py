"""Signals become a flag; the training loop services it at the next step boundary (no I/O in handlers).

A serviced stop signal ends the run with exit 75, a second Ctrl-C with 130. Under submitit
(``hydra/launcher=slurm``) Waypoint takes SIGUSR2 (or SIGTERM) first, saves the ``preempt`` checkpoint, then hands
the signal to submitit's requeue handler (``StopFlag.hand_over``), and the requeued job resumes. train.py installs
the handlers as it starts (``listen``), so a signal during start-up is a flag too, never "die with 128 + signum".
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
#: the handler a launcher installs to requeue its job after a checkpoint (submitit's, for SIGUSR2)
REQUEUE_HANDLERS = ("checkpoint_and_try_requeue",)


class Aborted(BaseException):
    """A second Ctrl-C: leave at once, without saving."""


class StopFlag:
    """Installs handlers for SIGINT/SIGTERM/SIGUSR1 that only record the signal; a second SIGINT aborts. Re-entering
    it is a no-op (the outermost ``with`` restores the old handlers)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._depth = 0

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

    def __enter__(self) -> StopFlag:
        if self._depth == 0:
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        self._depth += 1
        return self

    def requeuer(self) -> Any:
        """The requeue handler a launcher installed before us (submitit's), or None."""
        old = self._old.get(signal.SIGUSR2)
        return old if callable(old) and getattr(old, "__name__", "") in REQUEUE_HANDLERS else None

    def hand_over(self) -> bool:
        """After the ``preempt`` checkpoint is committed: let the launcher requeue the job (submitit's handler
        requeues and exits the process); False when no launcher asked for it (exit 75 then says "requeue me")."""
        requeue = self.requeuer()
        if requeue is None or self.signum in (None, signal.SIGINT):
            return False
        try:
            requeue(signal.SIGUSR2, None)  # submitit: requeues the job, then exits the process (SystemExit)
        except Exception:  # noqa: BLE001 - e.g. Slurm is requeueing a preempted job itself: exit 75 as without a launcher
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth:
            return
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


_PROCESS_FLAG: StopFlag | None = None


def listen() -> StopFlag:
    """The process's stop flag, installed on first call and kept for the life of the process (train.py)."""
    global _PROCESS_FLAG
    if _PROCESS_FLAG is None:
        _PROCESS_FLAG = StopFlag().__enter__()
    return _PROCESS_FLAG
