"""The store's errors: one hierarchy under ``CheckpointError``; every message is one sentence meant for people.

Callers catch ``CheckpointError`` to report any store failure; the subclasses say which kind it was.
"""

from __future__ import annotations

from waypoint.errors import EXIT_FAILED, WaypointError


class CheckpointError(WaypointError):
    """Base class of the store's errors; the message is meant for people. Exit 2 (the store cannot be used as
    asked: locked, no such checkpoint, a refused operation) unless a subclass says otherwise."""


class StoreLockedError(CheckpointError):
    """Another process holds the store's writer lock."""


class CheckpointWriteError(CheckpointError):
    """A save failed; nothing was committed and earlier checkpoints are intact."""

    exit_code = EXIT_FAILED


class CheckpointNotDurableError(CheckpointWriteError):
    """A save whose checkpoint is committed and listed, but whose last sync failed: it may not survive a power loss."""


class BackgroundSaveError(CheckpointError):
    """A save that ran in the background failed; raised at the next call or at close()."""

    exit_code = EXIT_FAILED


class IntegrityError(CheckpointError):
    """Stored bytes do not match their recorded hash, size or structure (damage: exit 1)."""

    exit_code = EXIT_FAILED


class ManifestError(CheckpointError):
    """A manifest that is missing, unreadable or fails its own checksum (damage: exit 1)."""

    exit_code = EXIT_FAILED
