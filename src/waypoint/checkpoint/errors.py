"""The store's errors; every message is one sentence meant for people."""
from __future__ import annotations


class CheckpointError(Exception):
    """Base class of the store's errors; the message is meant for people."""


class StoreLockedError(CheckpointError):
    """Another process holds the store's writer lock."""


class CheckpointWriteError(CheckpointError):
    """A save failed; nothing was committed and earlier checkpoints are intact."""


class CheckpointNotDurableError(CheckpointWriteError):
    """A save whose checkpoint is committed and listed, but whose last sync failed: it may not survive a power loss."""


class DamagedCheckpointError(CheckpointError):
    """A committed checkpoint whose files do not verify."""
