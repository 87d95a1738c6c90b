"""The store's errors; every message is one sentence meant for people."""
from __future__ import annotations


class CheckpointError(Exception):
    """Base class of the store's errors; the message is meant for people."""


class StoreLockedError(CheckpointError):
    """Another process holds the store's writer lock."""


class CheckpointWriteError(CheckpointError):
    """A save failed; nothing was committed and earlier checkpoints are intact."""


class DamagedCheckpointError(CheckpointError):
    """A committed checkpoint whose files do not verify."""
