"""One checkpoint's manifest, and the run's index of checkpoints (always rebuildable from manifests)."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .durable import canonical_json
from .errors import ManifestError
from .packs import TensorRecord, hash_algorithm

MANIFEST = "manifest.json"
STATE_JSON = "state.json"
#: spare copies of the two, written in the same commit: a damaged manifest or state is rebuilt from them
MANIFEST_COPY = "manifest.json.copy"
STATE_COPY = "state.json.copy"
FORMAT = "waypoint-checkpoint-2"  # names its tensors' hash in "content_hash" (BLAKE3)
FORMAT_SHA256 = "waypoint-checkpoint-1"  # the first format: SHA-256 content ids, no "content_hash" field
_ID_FORMS = {"blake3": re.compile(r"^b3:[0-9a-f]{64}$"), "sha256": re.compile(r"^[0-9a-f]{64}$")}


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
    path: str  # where it lives: a directory or a URL prefix (``Backend.describe``)
    valid: bool = True
    problem: str | None = None
    derived_tags: tuple[str, ...] = field(default=())

    @property
    def all_tags(self) -> tuple[str, ...]:
        """Stored tags plus derived ones (``latest``, ``best``)."""
        return tuple(sorted(set(self.tags) | set(self.derived_tags)))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (as printed by ``waypoint ls --json``)."""
        keys = ("name", "step", "epoch", "tags", "metrics", "digest", "logical_bytes", "created_at", "valid", "problem")
        return {k: getattr(self, k) for k in keys} | {"tags": list(self.all_tags)}


TensorEntry = TensorRecord  # one row of a manifest's tensor table (``pack`` names the pack holding its bytes)


@dataclass(frozen=True)
class Manifest:
    """A committed checkpoint's manifest as typed data (what readers outside the store may rely on)."""

    name: str
    format: str
    content_hash: str
    step: int
    epoch: int | None
    created_at: float
    tags: tuple[str, ...]
    notes: tuple[dict[str, Any], ...]
    metrics: dict[str, float | None]
    config_hash: str | None
    git_commit: str | None
    meta: dict[str, Any]
    versions: dict[str, str]
    host: str | None
    tensors: dict[str, TensorEntry]
    packs: dict[str, int]  # pack file name -> its size in bytes
    logical_bytes: int
    digest: str
    generation: int = 0  # the lease generation of the writer that published it (0: written before generations)

    @property
    def config(self) -> dict[str, Any]:
        """The run's resolved config as saved with this checkpoint (empty when none was recorded)."""
        return dict(self.meta.get("config") or {})

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Manifest:
        """Typed view of a parsed (and already checked) manifest document."""
        return cls(
            name=doc["name"],
            format=doc["format"],
            content_hash=content_hash(doc),
            step=int(doc["step"]),
            epoch=doc.get("epoch"),
            created_at=float(doc["created_at"]),
            tags=tuple(doc.get("tags", ())),
            notes=tuple(n for n in doc.get("notes", ()) if isinstance(n, dict)),
            metrics=dict(doc.get("metrics", {})),
            config_hash=doc.get("config_hash"),
            git_commit=doc.get("git_commit"),
            meta=dict(doc.get("meta", {})),
            versions=dict(doc.get("versions", {})),
            host=doc.get("host"),
            tensors={k: TensorRecord.from_json(t) for k, t in doc["tensors"].items()},
            packs={p: int(m.get("bytes", 0)) for p, m in sorted(doc.get("packs", {}).items())},
            logical_bytes=int(doc["logical_bytes"]),
            digest=doc["digest"],
            generation=int(doc.get("generation") or 0),
        )


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


@dataclass(frozen=True)
class Commit:
    """Everything one checkpoint records but its name: what a save produced, made a manifest by ``build``."""

    step: int
    epoch: int | None
    metrics: dict[str, float]
    tags: tuple[str, ...]
    meta: Mapping[str, Any]
    records: dict[str, TensorRecord]  # by state key; each names the pack that holds its bytes
    packs: dict[str, dict]  # pack -> {"bytes", "header_sha256"}
    tree_bytes: bytes  # the canonical JSON state (state.json)

    @property
    def digest(self) -> str:
        return state_digest({k: r.id for k, r in self.records.items()}, self.tree_bytes)


def build(c: Commit, *, name: str, created_at: float, versions: Mapping[str, str], generation: int | None) -> dict[str, Any]:
    """Assemble a manifest dict (without its self-checksum)."""
    unique = {r.id: r.nbytes for r in c.records.values()}
    algorithms = {hash_algorithm(r.id) for r in c.records.values()}
    if len(algorithms) > 1:
        raise ValueError("a checkpoint's tensor ids must all come from one hash algorithm")
    legacy = algorithms == {"sha256"}  # only when format-1 ids are forced: the manifest format 1 wrote
    return {
        "format": FORMAT_SHA256 if legacy else FORMAT,
        **({} if legacy else {"content_hash": "blake3"}),
        "name": name,
        "step": c.step,
        "epoch": c.epoch,
        "created_at": created_at,
        "tags": sorted(set(c.tags)),
        "metrics": c.metrics,
        "config_hash": c.meta.get("config_hash"),
        "git_commit": c.meta.get("git_commit"),
        "meta": {k: v for k, v in c.meta.items() if k not in ("config_hash", "git_commit")},
        "versions": dict(versions),
        "host": platform.node(),
        "tensors": {
            key: {"id": r.id, "dtype": r.dtype, "shape": list(r.shape), "nbytes": r.nbytes, "pack": r.pack}
            for key, r in c.records.items()
        },
        "packs": dict(c.packs),
        "files": {STATE_JSON: {"sha256": hashlib.sha256(c.tree_bytes).hexdigest(), "bytes": len(c.tree_bytes)}},
        "logical_bytes": sum(unique.values()) + len(c.tree_bytes),
        "digest": c.digest,
        **({"generation": generation} if generation is not None else {}),
    }


def seal(manifest: dict[str, Any]) -> bytes:
    """Manifest bytes with ``manifest_sha256`` over the rest of its canonical form."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    sealed = dict(body, manifest_sha256=hashlib.sha256(canonical_json(body)).hexdigest())
    return json.dumps(sealed, indent=1, sort_keys=True, allow_nan=False).encode()


def parse(raw: bytes, name: str, *, check: bool = True) -> dict[str, Any]:
    """A manifest from its bytes (checkpoint ``name`` for messages), self-verified when ``check``."""
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ManifestError(f"{name}/{MANIFEST} is not valid JSON (damaged)") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, FORMAT_SHA256):
        raise ManifestError(f"{name}/{MANIFEST} is not a waypoint manifest")
    if check:
        body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
        if hashlib.sha256(canonical_json(body)).hexdigest() != manifest.get("manifest_sha256"):
            raise ManifestError(f"{name}/{MANIFEST} fails its checksum (damaged)")
        check_ids(manifest, name)
    return manifest


def content_hash(manifest: Mapping[str, Any]) -> str:
    """The hash algorithm of a manifest's tensor ids: ``blake3`` (format 2) or ``sha256`` (format 1)."""
    return "sha256" if manifest.get("format") == FORMAT_SHA256 else manifest.get("content_hash", "?")


def check_ids(manifest: Mapping[str, Any], name: str) -> None:
    """Refuse a manifest whose tensor ids are not all of the form its named algorithm computes (verification
    re-hashes with the algorithm an id names: a format-2 manifest can never send a tensor to SHA-256)."""
    algorithm = content_hash(manifest)
    form = _ID_FORMS.get(algorithm)
    if form is None:
        raise ManifestError(f"{name}/{MANIFEST} names an unknown content hash '{algorithm}'")
    tensors = manifest.get("tensors")
    if not isinstance(tensors, dict) or not all(
        isinstance(t, dict) and isinstance(t.get("id"), str) and form.match(t["id"]) for t in tensors.values()
    ):
        raise ManifestError(f"{name}/{MANIFEST} holds tensor ids that are not {algorithm} ids")


def info_from(manifest: Mapping[str, Any], path: str) -> CheckpointInfo:
    """A CheckpointInfo from a parsed manifest."""
    return CheckpointInfo(
        name=manifest["name"],
        step=int(manifest["step"]),
        epoch=manifest.get("epoch"),
        tags=tuple(manifest.get("tags", ())),
        metrics=dict(manifest.get("metrics", {})),
        digest=manifest["digest"],
        logical_bytes=int(manifest["logical_bytes"]),
        created_at=float(manifest["created_at"]),
        path=path,
    )


def index_doc(infos: list[CheckpointInfo]) -> bytes:
    """The derived index.json document for a list of checkpoints."""
    rows = [{k: v for k, v in i.to_json().items() if k not in ("valid", "problem")} | {"tags": list(i.tags)} for i in infos]
    return json.dumps({"format": "waypoint-index-1", "checkpoints": rows}, indent=1, allow_nan=False).encode()


def parse_index(raw: bytes) -> list[dict] | None:
    """The rows of an index.json document, or None when it is damaged (or not an index)."""
    try:
        doc = json.loads(raw)
        rows = doc["checkpoints"]
        if doc.get("format") != "waypoint-index-1" or not isinstance(rows, list):
            return None
        return [r for r in rows if isinstance(r, dict) and isinstance(r.get("name"), str)]
    except (ValueError, KeyError, TypeError):
        return None
