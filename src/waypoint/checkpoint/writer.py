"""Background persist: the caller snapshots, one thread hashes and writes; at most one save in flight."""
from __future__ import annotations

import threading
from typing import Any, Callable

from .errors import BackgroundSaveError


class BackgroundWriter:
    """Runs one save at a time off the training thread and reports its failure later."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._what = ""
        self.last_result: Any = None

    def submit(self, fn: Callable[[], Any], what: str) -> None:
        """Wait for the save in flight (re-raising its failure), then start ``fn`` in the background."""
        self.wait()
        self._what = what

        def run() -> None:
            try:
                self.last_result = fn()
            except BaseException as exc:  # noqa: BLE001 - reported to the caller later
                self._error = exc

        self._thread = threading.Thread(target=run, name="waypoint-writer", daemon=False)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether a save is in flight."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Block until no save is in flight; raise BackgroundSaveError if the last one failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise BackgroundSaveError(f"the background save of {self._what} failed: {err}") from err
