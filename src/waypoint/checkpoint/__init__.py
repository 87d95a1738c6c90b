"""The checkpoint store: crash-safe, deduplicating, verifiable. Knows nothing about training."""

from .codec import UnsupportedValueError, decode, encode
from .errors import CheckpointNotDurableError
from .manager import CheckpointManager, CheckpointSizes, NoCheckpointError
from .manifest import CheckpointInfo, Manifest, ManifestError, TensorEntry
from .packs import IntegrityError
from .policy import (
    Candidate,
    KeepBest,
    KeepEveryN,
    KeepLast,
    KeepMilestones,
    KeepTagged,
    RetentionPolicy,
    SaveTriggers,
    TriggerState,
    is_improvement,
    milestone_steps,
)
from .storage import BackendError, LeaseLostError
from .store import CheckpointError, CheckpointStore, CheckpointWriteError, SaveRequest, StoreLockedError
from .writer import BackgroundSaveError

__all__ = [
    "BackendError",
    "BackgroundSaveError",
    "Candidate",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointSizes",
    "CheckpointNotDurableError",
    "CheckpointStore",
    "CheckpointWriteError",
    "IntegrityError",
    "KeepBest",
    "KeepEveryN",
    "KeepLast",
    "KeepMilestones",
    "KeepTagged",
    "LeaseLostError",
    "Manifest",
    "ManifestError",
    "NoCheckpointError",
    "RetentionPolicy",
    "SaveRequest",
    "SaveTriggers",
    "StoreLockedError",
    "TensorEntry",
    "TriggerState",
    "UnsupportedValueError",
    "decode",
    "encode",
    "is_improvement",
    "milestone_steps",
]
