"""What a copy of a checkpoints root must hold, each file checked as the store checks it.

``inventory(root)`` lists, in the order a copy stays usable at every moment (packs first, then each
checkpoint's state.json and manifest.json last, then the index), every file a backup should copy,
with the SHA-256 of its bytes, or the problem that makes it unfit to copy: a pack whose size, header or
any tensor does not match, a state.json that fails its hash, a manifest that fails its checksum. A
checkpoint is fit only when all it names is. Nothing is written and no lock is taken; a checkpoint or
pack deleted by a live writer meanwhile is left out, not reported.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from . import manifest as mf
from .durable import open_regular
from .integrity import open_pack, read_state, verify_tensor
from .packs import IntegrityError, TensorRecord
from .store import CheckpointStore


@dataclass(frozen=True)
class StoreFile:
    """One file of a checkpoints root, as a copy should hold it."""

    rel: str                 # path relative to the checkpoints root, '/'-separated
    path: Path
    sha256: str | None       # of the whole file; None when it is unfit to copy
    size: int
    problem: str | None = None


def file_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a regular file (a symlink or FIFO raises OSError)."""
    fd = open_regular(path)
    h, size = hashlib.sha256(), 0
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return h.hexdigest(), size


def _pack_problem(store: CheckpointStore, name: str, manifest: dict) -> str | None:
    """Why a pack is unfit (size, header, or a tensor that does not match its content id), or None."""
    try:
        entries, start, fd = open_pack(store.packs_dir, name, manifest)
    except IntegrityError as exc:
        return str(exc)
    try:
        for cid, entry in entries.items():
            begin, end = entry["data_offsets"]
            err = verify_tensor(fd, entries, start, TensorRecord(cid, entry["dtype"], tuple(entry["shape"]), end - begin),
                                name)
            if err:
                return err
    finally:
        os.close(fd)
    return None


def _entry(path: Path, rel: str, problem: str | None) -> StoreFile | None:
    if problem is not None:
        return StoreFile(rel, path, None, 0, problem)
    try:
        sha, size = file_sha256(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return StoreFile(rel, path, None, 0, f"{rel} cannot be read ({exc.strerror or exc})")
    return StoreFile(rel, path, sha, size)


def inventory(root: str | os.PathLike) -> list[StoreFile]:
    """Every file a copy of ``root`` needs, in copy order, each with its hash or its problem."""
    store = CheckpointStore(root, writable=False)
    try:
        out: list[StoreFile] = []
        checked: dict[str, str | None] = {}
        tail: list[StoreFile] = []
        for path in store.checkpoint_dirs():
            rel = path.name
            try:
                manifest = mf.load(path)
                read_state(path, manifest)
                problem = None
            except (mf.ManifestError, IntegrityError, KeyError, TypeError) as exc:
                if not os.path.lexists(path):
                    continue  # deleted by a live writer
                problem = str(exc)
                manifest = {"packs": {}}
            pack_problems = []
            for name in sorted(manifest.get("packs", {})):
                if name not in checked:
                    checked[name] = _pack_problem(store, name, manifest)
                    entry = _entry(store.packs_dir / name, f"packs/{name}", checked[name])
                    if entry is not None:
                        out.append(entry)
                if checked[name]:
                    pack_problems.append(checked[name])
            if problem is None and pack_problems and not os.path.lexists(path):
                continue
            if problem is None and pack_problems:
                problem = f"it names a damaged pack ({pack_problems[0]})"
            for fname in (mf.STATE_JSON, mf.MANIFEST):
                entry = _entry(path / fname, f"{rel}/{fname}", problem)
                if entry is not None:
                    tail.append(entry)
        index = _entry(store.root / "index.json", "index.json", None)
        return out + tail + ([index] if index is not None and index.sha256 else [])
    finally:
        store.close()
