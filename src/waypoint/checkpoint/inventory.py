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
from .durable import open_regular, read_nofollow
from .integrity import open_pack, read_state, verify_tensor
from .packs import IntegrityError, TensorRecord, entry_nbytes
from .store import CheckpointStore, manifest_since


@dataclass(frozen=True)
class StoreFile:
    """One file of a checkpoints root, as a copy should hold it."""

    rel: str  # path relative to the checkpoints root, '/'-separated
    path: Path
    sha256: str | None  # of the whole file; None when it is unfit to copy
    size: int
    problem: str | None = None
    needs: tuple[str, ...] = ()  # files (packs) that must be in the copy before this one (a manifest)


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
            err = verify_tensor(
                fd, entries, start, TensorRecord(cid, entry["dtype"], tuple(entry["shape"]), entry_nbytes(entry)), name
            )
            if err:
                return err
    finally:
        os.close(fd)
    return None


def _entry(path: Path, rel: str, problem: str | None, needs: tuple[str, ...] = ()) -> StoreFile | None:
    if problem is not None:
        return StoreFile(rel, path, None, 0, problem)
    try:
        sha, size = file_sha256(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return StoreFile(rel, path, None, 0, f"{rel} cannot be read ({exc.strerror or exc})")
    return StoreFile(rel, path, sha, size, None, needs)


def _checkpoint(store: CheckpointStore, path: Path, checked: dict[str, str | None]) -> tuple[str | None, dict, bytes] | None:
    """(problem, manifest) of one checkpoint, its packs checked into ``checked``; None when a live writer
    deleted it meanwhile. A problem seen with a manifest that changed meanwhile (repack) is looked at again."""
    last = "its manifest kept changing while it was read"
    for _ in range(5):
        try:
            before = read_nofollow(path / mf.MANIFEST)
            manifest = mf.load(path)
            read_state(path, manifest)
        except (mf.ManifestError, IntegrityError, KeyError, TypeError, OSError) as exc:
            if not os.path.lexists(path):
                return None
            last = str(exc)  # a manifest replaced while read (repack) fails once: look again
            continue
        problems = []
        for name in sorted(manifest.get("packs", {})):
            if name not in checked or checked[name] is not None:  # a bad one is looked at again
                checked[name] = _pack_problem(store, name, manifest)
            if checked[name]:
                problems.append(checked[name])
        if not problems:
            return None if not os.path.lexists(path) else (None, manifest, before)
        now = manifest_since(path, before)
        if now == "changed":
            continue
        if now == "gone":
            return None
        return f"it names a damaged pack ({problems[0]})", manifest, before
    return last, {"packs": {}}, b""


def inventory(root: str | os.PathLike) -> list[StoreFile]:
    """Every file a copy of ``root`` needs, in copy order, each with its hash or its problem."""
    store = CheckpointStore(root, writable=False)
    try:
        checked: dict[str, str | None] = {}
        needed: list[str] = []
        tail: list[StoreFile] = []
        for path in store.checkpoint_dirs():
            found = _checkpoint(store, path, checked)
            if found is None:
                continue  # deleted by a live writer: not damage
            problem, manifest, manifest_bytes = found
            names = sorted(manifest.get("packs", {}))
            needed += [p for p in names if p not in needed]
            for fname in (mf.STATE_JSON, mf.MANIFEST):
                needs = tuple(f"packs/{p}" for p in names) + ((f"{path.name}/{mf.STATE_JSON}",) if fname == mf.MANIFEST else ())
                entry = _entry(path / fname, f"{path.name}/{fname}", problem, needs)
                if entry is not None and fname == mf.MANIFEST and entry.sha256:  # the very bytes checked above
                    entry = StoreFile(
                        entry.rel, path / fname, hashlib.sha256(manifest_bytes).hexdigest(), len(manifest_bytes), None, needs
                    )
                if entry is not None:
                    tail.append(entry)
        packs = [e for e in (_entry(store.packs_dir / p, f"packs/{p}", checked.get(p)) for p in needed) if e is not None]
        index = _entry(store.root / "index.json", "index.json", None)
        return packs + tail + ([index] if index is not None and index.sha256 else [])
    finally:
        store.close()
