"""Startup recovery of a checkpoints root: what a writer's open removes, under the store lock.

An interrupted save, retention pass or manifest rewrite leaves debris whose name says what it is, and
none of it is ever read as a checkpoint:

- ``.staging-<name>-<uuid>/`` in the root: a checkpoint that was never committed (renamed only when complete)
- ``.trash-<name>-<uuid>/`` in the root: a checkpoint retention was deleting
- ``.tmp-*`` in the root (``index.json``), in ``packs/`` (a pack being written) and inside a committed
  checkpoint (``manifest.json`` being rewritten with new tags): the temp file of an atomic replace

Removal never follows a symlink: a planted link is unlinked, its target left alone. Only the holder of
the writer lock may run this: a live writer's staging dir looks exactly like a dead one's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .durable import fsync_dir, rmtree_nofollow

ROOT_DEBRIS = (".staging-", ".trash-", ".tmp-")
TEMP = (".tmp-",)


def remove_stale(root: Path, packs_dir: Path, checkpoint_dirs: Iterable[Path]) -> list[str]:
    """Remove the debris of interrupted writes; returns what was removed (relative to ``root``)."""
    removed: list[str] = []
    places = [(root, ROOT_DEBRIS), (packs_dir, TEMP)] + [(d, TEMP) for d in checkpoint_dirs]
    for directory, prefixes in places:
        here = [Path(e.path) for e in os.scandir(directory) if e.name.startswith(prefixes)]
        for path in here:
            rmtree_nofollow(path)  # a file, a directory or a symlink (unlinked, never followed)
            removed.append(os.path.relpath(path, root))
        if here:
            fsync_dir(directory)
    return removed
