"""One checkpoint's manifest, and the run's index of checkpoints (always rebuildable from manifests)."""
from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .durable import canonical_json, read_nofollow
from .errors import ManifestError
from .packs import TensorRecord

MANIFEST = "manifest.json"
STATE_JSON = "state.json"
FORMAT = "waypoint-checkpoint-1"


@dataclass(frozen=True)
class CheckpointInfo:
    """What a listing shows about one committed checkpoint."""

    name: str
    step: int
    epoch: int | None
    tags: tuple[str, ...]
    metrics: dict[str, float]
    digest: str
    logical_bytes: int
    created_at: float
    path: Path
    valid: bool = True
    problem: str | None = None
    derived_tags: tuple[str, ...] = field(default=())

    @property
    def all_tags(self) -> tuple[str, ...]:
        """Stored tags plus derived ones (``latest``, ``best``)."""
        return tuple(sorted(set(self.tags) | set(self.derived_tags)))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (as printed by ``waypoint ls --json``)."""
        return {"name": self.name, "step": self.step, "epoch": self.epoch, "tags": list(self.all_tags),
                "metrics": self.metrics, "digest": self.digest, "logical_bytes": self.logical_bytes,
                "created_at": self.created_at, "valid": self.valid, "problem": self.problem}


def state_digest(tensor_ids: Mapping[str, str], tree_bytes: bytes) -> str:
    """Digest of a whole training state: tensor content ids by key plus the canonical JSON tree."""
    h = hashlib.sha256(canonical_json(dict(sorted(tensor_ids.items()))))
    h.update(b"\0")
    h.update(tree_bytes)
    return h.hexdigest()


def clean_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Metrics as plain floats (non-finite values become None); non-numbers are refused."""
    out: dict[str, float] = {}
    for k, v in (metrics or {}).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"metric '{k}' is not a number: {v!r}") from None
        out[str(k)] = f if math.isfinite(f) else None  # type: ignore[assignment]
    return out


def build(*, name: str, step: int, epoch: int | None, created_at: float, tags: tuple[str, ...],
          metrics: dict[str, float], records: Mapping[str, TensorRecord], tensor_packs: Mapping[str, str],
          packs: Mapping[str, dict], state_sha256: str, state_bytes: int, digest: str,
          meta: Mapping[str, Any], versions: Mapping[str, str]) -> dict[str, Any]:
    """Assemble a manifest dict (without its self-checksum)."""
    unique = {r.id: r.nbytes for r in records.values()}
    return {
        "format": FORMAT, "name": name, "step": step, "epoch": epoch, "created_at": created_at,
        "tags": sorted(set(tags)), "metrics": metrics,
        "config_hash": meta.get("config_hash"), "git_commit": meta.get("git_commit"),
        "meta": {k: v for k, v in meta.items() if k not in ("config_hash", "git_commit")},
        "versions": dict(versions), "host": platform.node(),
        "tensors": {key: {"id": r.id, "dtype": r.dtype, "shape": list(r.shape), "nbytes": r.nbytes,
                          "pack": tensor_packs[r.id]} for key, r in records.items()},
        "packs": dict(packs),
        "files": {STATE_JSON: {"sha256": state_sha256, "bytes": state_bytes}},
        "logical_bytes": sum(unique.values()) + state_bytes,
        "digest": digest,
    }


def seal(manifest: dict[str, Any]) -> bytes:
    """Manifest bytes with ``manifest_sha256`` over the rest of its canonical form."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    sealed = dict(body, manifest_sha256=hashlib.sha256(canonical_json(body)).hexdigest())
    return json.dumps(sealed, indent=1, sort_keys=True, allow_nan=False).encode()


def load(ckpt_dir: Path, *, check: bool = True) -> dict[str, Any]:
    """Read and (when ``check``) self-verify a checkpoint's manifest."""
    path = ckpt_dir / MANIFEST
    try:
        raw = read_nofollow(path)
    except FileNotFoundError:
        raise ManifestError(f"{ckpt_dir.name} has no {MANIFEST}") from None
    except OSError as exc:  # a symlink (ELOOP), a directory, a FIFO...: never followed, never trusted
        raise ManifestError(f"{ckpt_dir.name}/{MANIFEST} cannot be read ({exc.strerror or exc})") from None
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ManifestError(f"{ckpt_dir.name}/{MANIFEST} is not valid JSON (damaged)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"{ckpt_dir.name}/{MANIFEST} is not a waypoint manifest")
    if check:
        body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
        if hashlib.sha256(canonical_json(body)).hexdigest() != manifest.get("manifest_sha256"):
            raise ManifestError(f"{ckpt_dir.name}/{MANIFEST} fails its checksum (damaged)")
    return manifest


def info_from(manifest: Mapping[str, Any], path: Path) -> CheckpointInfo:
    """A CheckpointInfo from a parsed manifest."""
    return CheckpointInfo(
        name=manifest["name"], step=int(manifest["step"]), epoch=manifest.get("epoch"),
        tags=tuple(manifest.get("tags", ())), metrics=dict(manifest.get("metrics", {})),
        digest=manifest["digest"], logical_bytes=int(manifest["logical_bytes"]),
        created_at=float(manifest["created_at"]), path=path)


def index_doc(infos: list[CheckpointInfo]) -> bytes:
    """The derived index.json document for a list of checkpoints."""
    rows = [{k: v for k, v in i.to_json().items() if k not in ("valid", "problem")} | {"tags": list(i.tags)}
            for i in infos]
    return json.dumps({"format": "waypoint-index-1", "checkpoints": rows}, indent=1, allow_nan=False).encode()


def read_index(path: Path) -> list[dict] | None:
    """The index's rows, or None when it is missing or damaged (a symlink or a FIFO counts as damaged)."""
    try:
        doc = json.loads(read_nofollow(path))
        rows = doc["checkpoints"]
        if doc.get("format") != "waypoint-index-1" or not isinstance(rows, list):
            return None
        return [r for r in rows if isinstance(r, dict) and isinstance(r.get("name"), str)]
    except (OSError, ValueError, KeyError, TypeError):
        return None
