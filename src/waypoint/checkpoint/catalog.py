"""What a checkpoints root holds, read from its backend: the committed checkpoints, judged under the fence.

A checkpoint exists once its manifest does (``<name>/manifest.json``). On a backend that commits by renaming a
directory, a ``step_*`` directory without its manifest is a damaged checkpoint (it was complete when renamed);
elsewhere it is what a save cut short left (the manifest is the commit point), and the lease holder removes it.

The fence (``FENCE``: {generation, accepted, at}) is written by every new lease holder before it changes
anything: the lease generation it holds, every checkpoint it found and when. A manifest records the generation of
the writer that published it and when it was made; one of an older generation that the fence does not name, made
after the fence, was published by a writer after it had lost its lease (a process paused past its lease's expiry
that woke up while the new holder was writing): it is void, listed by no reader, and removed by the holder.
Nothing of the new holder is ever affected by it. (A checkpoint made before the fence, copied in later by hand,
is not void.)

Lock-free readers tolerate a live writer: a checkpoint deleted meanwhile is left out, one whose manifest was
rewritten (repack, tags) is read again, and only a problem that persists with one manifest is reported.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import manifest as mf
from .storage import Backend
from .storage.base import LEASE_EXPIRING

log = logging.getLogger(__name__)
CKPT_NAME = re.compile(r"^step_(\d{9,})(?:\.(\d+))?$")
CKPT_LIKE = "step_"  # any directory named like this may hold a manifest naming packs, listed or not
FENCE = "FENCE"
PACKS = "packs/"


#: clocks of two hosts may disagree by this much: a checkpoint made this long before the fence is not void
CLOCK_SKEW_S = 10.0


@dataclass(frozen=True)
class Fence:
    """The newest lease holder's generation, the checkpoints it found and when (None: no fence written yet)."""

    generation: int = 0
    accepted: frozenset[str] | None = None
    at: float = 0.0

    def voids(self, name: str, generation: int, created_at: float) -> bool:
        """Whether a checkpoint published by a writer of ``generation`` came after that writer lost its lease."""
        if self.accepted is None or generation >= self.generation or name in self.accepted:
            return False
        return created_at > self.at - CLOCK_SKEW_S


def read_fence(backend: Backend) -> Fence:
    """The fence of a checkpoints root (an empty one when none was written, or it is unreadable)."""
    try:
        doc = json.loads(backend.read(FENCE))
        accepted = doc["accepted"]
        if isinstance(doc["generation"], int) and isinstance(accepted, list):
            return Fence(doc["generation"], frozenset(str(n) for n in accepted), float(doc.get("at") or 0.0))
    except FileNotFoundError:
        return Fence()
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log.warning("%s is damaged; every checkpoint is taken as sound until the next writer rewrites it", backend.describe(FENCE))
    return Fence()


def write_fence(backend: Backend, generation: int, accepted: list[str]) -> None:
    doc = {"generation": generation, "accepted": sorted(accepted), "at": time.time()}
    backend.replace(FENCE, json.dumps(doc, indent=0).encode())


def order(name: str) -> tuple[int, int, str]:
    m = CKPT_NAME.match(name)
    return (int(m.group(1)), int(m.group(2) or 0), name) if m else (-1, 0, name)


@dataclass
class Catalog:
    """The committed checkpoints of one root, as last read (or written) by this process."""

    backend: Backend
    infos: dict[str, mf.CheckpointInfo] = field(default_factory=dict)
    manifests: dict[str, dict | None] = field(default_factory=dict)  # None: unreadable or failing its checksum
    known: dict[str, str] = field(default_factory=dict)  # tensor content id -> pack, from sound manifests
    pack_meta: dict[str, dict] = field(default_factory=dict)  # pack -> {"bytes", "header_sha256"}
    sizes: dict[str, int] = field(default_factory=dict)  # the last listing
    voided: list[str] = field(default_factory=list)  # manifests the fence voids
    orphans: list[str] = field(default_factory=list)  # step_* directories without a manifest that are not checkpoints
    fence: Fence = field(default_factory=Fence)

    # ------------------------------------------------------------------ reading everything
    def scan(self) -> None:
        """List the root once, then read every manifest."""
        self.fence = read_fence(self.backend)
        self.sizes = self.backend.list()
        for d in (self.infos, self.manifests, self.known, self.pack_meta):
            d.clear()
        self.voided, self.orphans = [], []
        for name in sorted(self.names(), key=order):
            found = self.inspect(name)
            if found is None:
                continue  # deleted while we looked, or not a checkpoint: not damage
            info, manifest = found
            if manifest is not None and self._void(name, manifest):
                self.voided.append(name)
                continue
            self.add(info, manifest)
        if not self.backend.caps.atomic_rename:  # the manifest is the commit point: files without one were never committed
            self.orphans = sorted(n for n in self.names() if f"{n}/{mf.MANIFEST}" not in self.sizes and n not in self.infos)

    def _void(self, name: str, manifest: Mapping[str, Any]) -> bool:
        """Whether the fence voids a manifest. Only where a lease can be lost (it expires): a writer holding a record
        lock holds it until it ends, so there no checkpoint can come from a writer that lost its lease."""
        if self.backend.caps.lease != LEASE_EXPIRING:
            return False
        return self.fence.voids(name, int(manifest.get("generation") or 0), float(manifest.get("created_at") or 0.0))

    def names(self) -> set[str]:
        """Names of directories that hold files and are named like checkpoints."""
        return {k.split("/", 1)[0] for k in self.sizes if "/" in k and CKPT_NAME.match(k.split("/", 1)[0])}

    def add(self, info: mf.CheckpointInfo, manifest: dict | None) -> None:
        """List a checkpoint; its tensors become known for deduplication when it is sound."""
        self.infos[info.name] = info
        self.manifests[info.name] = manifest
        if manifest is not None and info.valid:
            for rec in manifest.get("tensors", {}).values():
                self.known[rec["id"]] = rec["pack"]
            self.pack_meta.update(manifest.get("packs", {}))

    def forget(self, name: str) -> None:
        self.infos.pop(name, None)
        self.manifests.pop(name, None)

    # ------------------------------------------------------------------ one checkpoint
    def manifest_bytes(self, name: str) -> bytes | None:
        """A manifest's bytes; None when its checkpoint is gone; b"" when it cannot be read (damage, not absence)."""
        try:
            return self.backend.read(f"{name}/{mf.MANIFEST}")
        except FileNotFoundError:
            return None if self.gone(name) else b""
        except OSError:
            return b""

    def gone(self, name: str) -> bool:
        """Whether checkpoint ``name`` is not there (deleted) rather than damaged: on a backend that commits by
        renaming, a directory that still holds files is damaged; elsewhere no manifest means no checkpoint."""
        if not self.backend.caps.atomic_rename:
            return True
        return not self.backend.list(name + "/")

    def inspect(self, name: str, attempts: int = 5) -> tuple[mf.CheckpointInfo, dict | None] | None:
        """A checkpoint's info (invalid when its manifest is damaged or a pack it names is missing) and its manifest;
        None when it is gone (or, where the manifest is the commit point, was never committed)."""
        info: mf.CheckpointInfo | None = None
        manifest: dict | None = None
        for _ in range(attempts):
            raw = self.manifest_bytes(name)
            if raw is None:
                return None
            try:
                manifest = mf.parse(raw, name) if raw else None
                if manifest is None:
                    raise mf.ManifestError(f"{name}/{mf.MANIFEST} cannot be read")
                info = mf.info_from(manifest, self.backend.describe(name))
            except (mf.ManifestError, KeyError, TypeError, ValueError) as exc:
                info, manifest = self._damaged(name, raw, exc), None
                continue  # replaced while it was read (a tag change, repack) fails once: look again
            missing = self.missing_packs(manifest)
            if not missing:
                return info, manifest
            now = self.manifest_bytes(name)
            if now is None:
                return None
            if now == raw:
                return dataclasses.replace(info, valid=False, problem="; ".join(missing)), manifest
        if info is None:
            return None
        return info, manifest

    def _damaged(self, name: str, raw: bytes, exc: Exception) -> mf.CheckpointInfo:
        m = CKPT_NAME.match(name)
        problem = str(exc) if raw else f"{name}/{mf.MANIFEST} is missing or cannot be read"
        step, where = int(m.group(1)) if m else -1, self.backend.describe(name)
        # nothing is known of it but its name: no epoch, tags, metrics, digest, size or time
        return mf.CheckpointInfo(name, step, None, (), {}, "", 0, 0.0, where, valid=False, problem=problem)

    def missing_packs(self, manifest: Mapping[str, Any]) -> list[str]:
        """Packs a manifest names that are absent or of another size than it recorded (a cheap check)."""
        problems = []
        for name, meta in manifest.get("packs", {}).items():
            size = self.sizes.get(PACKS + name)
            if size is None:  # written after the listing (a repack), or really missing
                size = self.backend.size(PACKS + name)
            if size is None:
                problems.append(f"pack {name} is missing")
            elif isinstance(meta, dict) and size != meta.get("bytes"):
                problems.append(f"pack {name} does not match its recorded size")
        return problems

    def read_manifest(self, name: str, *, check: bool = True) -> dict:
        """A committed checkpoint's manifest, read now (ManifestError when absent or damaged)."""
        raw = self.manifest_bytes(name)
        if not raw:
            raise mf.ManifestError(f"{name} has no {mf.MANIFEST}" if raw is None else f"{name}/{mf.MANIFEST} cannot be read")
        return mf.parse(raw, name, check=check)

    # ------------------------------------------------------------------ what packs are used
    def sound_manifests(self, fresh: bool) -> list[tuple[str, dict]] | None:
        """Every listed checkpoint's verified manifest (read again when ``fresh``); None if one is unreadable."""
        found = []
        for name in list(self.infos):
            cached = self.manifests.get(name)
            if not fresh and cached is not None:
                found.append((name, cached))
                continue
            try:
                found.append((name, self.read_manifest(name)))
            except mf.ManifestError:
                if fresh and self.manifest_bytes(name) is None:
                    continue  # deleted meanwhile by a live writer
                return None
        return found

    def referenced_packs(self, fresh: bool) -> set[str] | None:
        """Packs some manifest names; None when one cannot be read (then nothing may be collected). An unlisted
        ``step_*`` directory (an unparsable name, a voided checkpoint) still protects the packs its manifest names."""
        manifests = self.sound_manifests(fresh)
        if manifests is None:
            return None
        refs = {p for _name, m in manifests for p in m.get("packs", {})}
        listed = {name for name, _m in manifests}
        others = {k.split("/", 1)[0] for k in self.backend.list() if k.startswith(CKPT_LIKE) and "/" in k} - listed
        for name in sorted(others):
            try:
                packs = self.read_manifest(name, check=False).get("packs", {})
            except mf.ManifestError:
                if self.manifest_bytes(name) is None and not self.backend.caps.atomic_rename:
                    continue  # a state file a cut-short save left: it names no pack
                return None
            if not isinstance(packs, dict):
                return None
            refs.update(packs)
        return refs

    def index(self) -> bytes:
        """The derived index.json document of the sound checkpoints."""
        return mf.index_doc([i for i in self.infos.values() if i.valid])
