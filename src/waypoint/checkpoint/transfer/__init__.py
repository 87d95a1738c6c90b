"""Moving checkpoints in and out of a store: export a part, import a foreign file, back up to another store."""

from .backup import BackgroundMirror, BackupRefusedError, backup, mirror
from .export import ImportRefusedError, export_checkpoint, import_checkpoint, import_into

__all__ = [
    "BackgroundMirror",
    "BackupRefusedError",
    "ImportRefusedError",
    "backup",
    "export_checkpoint",
    "import_checkpoint",
    "import_into",
    "mirror",
]
