"""Incremental backup of a run directory to a local directory or an fsspec URL.

Order matters for a copy that is always usable: packs first (immutable, named by content), then each
checkpoint's files (manifest last), then the index and the run's small files. Re-running copies only
what the destination lacks or what changed (manifests whose tags changed).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import fsspec

from waypoint.checkpoint.store import CKPT_NAME

RUN_FILES = ("metrics.jsonl",)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def backup_run(run_dir: str | os.PathLike, dest: str) -> dict[str, Any]:
    """Copy a run's checkpoints (and metrics, Hydra config) to ``dest``; only what is missing or changed."""
    run = Path(run_dir)
    ck = run / "checkpoints"
    fs, root = fsspec.core.url_to_fs(dest)
    root = root.rstrip("/")
    copied: list[str] = []
    skipped = 0
    total_bytes = 0

    def put(src: Path, rel: str, immutable: bool) -> None:
        nonlocal skipped, total_bytes
        target = f"{root}/{rel}"
        if fs.exists(target):
            same_size = fs.size(target) == src.stat().st_size
            if immutable and same_size:
                skipped += 1
                return
            if not immutable and same_size and _remote_sha(fs, target) == _sha(src):
                skipped += 1
                return
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{target}.partial"
        fs.put_file(str(src), tmp)
        fs.mv(tmp, target)
        copied.append(rel)
        total_bytes += src.stat().st_size

    for pack in sorted((ck / "packs").glob("*.safetensors")):
        put(pack, f"checkpoints/packs/{pack.name}", immutable=True)
    for ckpt in sorted(p for p in ck.iterdir() if CKPT_NAME.match(p.name) and p.is_dir()):
        for name in ("state.json", "manifest.json"):
            if (ckpt / name).exists():
                put(ckpt / name, f"checkpoints/{ckpt.name}/{name}", immutable=name == "state.json")
    if (ck / "index.json").exists():
        put(ck / "index.json", "checkpoints/index.json", immutable=False)
    for name in RUN_FILES:
        if (run / name).exists():
            put(run / name, name, immutable=False)
    for cfg in sorted((run / ".hydra").glob("*.yaml")) if (run / ".hydra").is_dir() else []:
        put(cfg, f".hydra/{cfg.name}", immutable=False)
    packs = sum(1 for rel in copied if rel.startswith("checkpoints/packs/"))
    return {"dest": dest, "copied": copied, "copied_bytes": total_bytes, "packs_copied": packs, "unchanged": skipped}


def _remote_sha(fs: Any, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
