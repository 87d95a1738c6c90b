"""Incremental, verified backup of a run directory to a local directory or an fsspec URL.

Order matters for a copy that is always usable: packs first (immutable, named by content), then each
checkpoint's files (manifest last), then the index and the run's small files. Every file is checked
as the store checks it before it is copied (``waypoint.checkpoint.inventory``): a damaged source file
is reported and never copied (a good copy already at the destination stays), and a checkpoint is
copied only when everything it names is sound. A file already at the destination is kept only when its
SHA-256 equals the source's, so a damaged copy of the same size is repaired. Re-running copies only
what the destination lacks or holds wrong.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import fsspec

from .durable import open_regular
from .inventory import file_sha256, inventory
from .refs import checkpoints_root

RUN_FILES = ("metrics.jsonl",)


class BackupRefusedError(ValueError):
    """A backup that cannot be made as asked (e.g. the destination lies inside the source)."""


def _remote_sha(fs: Any, path: str) -> str | None:
    try:
        h = hashlib.sha256()
        with fs.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _inside(dest: Path, source: Path) -> bool:
    dest, source = dest.resolve(), source.resolve()
    return dest == source or source in dest.parents


def backup_run(run_dir: str | os.PathLike, dest: str) -> dict[str, Any]:
    """Copy a run's checkpoints (and metrics, Hydra config) to ``dest``; only what is missing or wrong there.

    ``run_dir`` is a run directory or its ``checkpoints/`` directory (the whole run is copied either way).
    The result's ``damaged`` maps each source file that was not copied to its problem.
    """
    ck = checkpoints_root(run_dir)
    run = ck.parent if ck.name == "checkpoints" else None
    fs, root = fsspec.core.url_to_fs(dest)
    root = root.rstrip("/") or "/"
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        source = run if run is not None else ck
        if _inside(Path(root), source):
            raise BackupRefusedError(
                f"the destination {dest} lies inside the run being backed up ({source}); choose a destination outside it"
            )
    copied: list[str] = []
    repaired: list[str] = []
    damaged: dict[str, str] = {}
    changed: list[str] = []  # deleted or rewritten by a live writer while the backup ran: copied next time
    in_copy: set[str] = set()  # files the destination now holds as the source had them
    skipped = 0
    total_bytes = 0

    def put(src: Path, rel: str, sha: str) -> None:
        nonlocal skipped, total_bytes
        target = f"{root}/{rel}"
        there = fs.exists(target)
        if there and _remote_sha(fs, target) == sha:
            skipped += 1
            in_copy.add(rel)
            return
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{target}.partial"
        h, size = hashlib.sha256(), 0
        try:
            fd = open_regular(src)
        except FileNotFoundError:
            changed.append(rel)
            return
        try:
            with os.fdopen(fd, "rb") as f, fs.open(tmp, "wb") as out:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except BaseException:
            if fs.exists(tmp):
                fs.rm(tmp)
            raise
        if h.hexdigest() != sha:  # rewritten since it was checked: leave the destination as it was
            fs.rm(tmp)
            changed.append(rel)
            return
        fs.mv(tmp, target)
        in_copy.add(rel)
        copied.append(rel)
        if there:
            repaired.append(rel)
        total_bytes += size

    for item in inventory(ck):
        rel = f"checkpoints/{item.rel}"
        if item.sha256 is None:
            damaged[rel] = item.problem or "damaged"
            continue
        if not all(f"checkpoints/{n}" in in_copy for n in item.needs):
            changed.append(rel)  # never a copied manifest whose packs are not in the copy
            continue
        put(item.path, rel, item.sha256)
    # a checkpoint whose manifest is not in the copy must not appear half there (its state.json may have been
    # copied before a live writer deleted or rewrote the checkpoint, or before its manifest was found unfit)
    touched = {rel.split("/")[1] for rel in (*copied, *changed, *in_copy) if rel.count("/") == 2}  # made or filled here
    for folder in sorted(f for f in touched if f.startswith("step_")):
        if not fs.exists(f"{root}/checkpoints/{folder}/manifest.json"):
            if fs.exists(f"{root}/checkpoints/{folder}"):
                fs.rm(f"{root}/checkpoints/{folder}", recursive=True)
            copied[:] = [c for c in copied if not c.startswith(f"checkpoints/{folder}/")]
    small = [(run / name, name) for name in RUN_FILES] if run is not None else []
    if run is not None and (run / ".hydra").is_dir():
        small += [(cfg, f".hydra/{cfg.name}") for cfg in sorted((run / ".hydra").glob("*.yaml"))]
    for path, rel in small:
        try:
            sha, _size = file_sha256(path)
        except FileNotFoundError:
            continue
        put(path, rel, sha)
    packs = sum(1 for rel in copied if rel.startswith("checkpoints/packs/"))
    return {
        "dest": dest,
        "copied": copied,
        "repaired": repaired,
        "copied_bytes": total_bytes,
        "packs_copied": packs,
        "unchanged": skipped,
        "damaged": damaged,
        "changed_during_backup": changed,
    }
