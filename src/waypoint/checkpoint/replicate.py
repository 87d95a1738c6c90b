"""Copying checkpoints from one store into another (a backup, a mirror, a repair from a backup).

``mirror`` copies each sound checkpoint the destination lacks (or holds with other tags): first the packs it lacks
(with parity), each checked at the source (a damaged one is reported, never copied, and keeps its checkpoints out),
then the checkpoint, published by the destination's own commit protocol, so a copy never names a pack it does not
hold. ``check`` re-verifies the destination and replaces damaged copies. A checkpoint deleted or repacked by a live
source writer while it is copied is left for the next pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import manifest as mf
from .integrity import read_state
from .packs import IntegrityError, TensorRecord
from .parity import key_of as parity_key
from .reading import verify_pack
from .storage import Backend
from .store import CheckpointStore

_CHUNK = 8 << 20


@dataclass
class MirrorReport:
    copied: list[str] = field(default_factory=list)  # files copied, relative to the run ('checkpoints/packs/...')
    checkpoints: list[str] = field(default_factory=list)  # checkpoints published at the destination
    repaired: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # source file -> its problem (never copied)
    changed: list[str] = field(default_factory=list)  # deleted or rewritten by a live writer meanwhile
    unchanged: int = 0
    copied_bytes: int = 0

    @property
    def packs_copied(self) -> int:
        return sum(1 for rel in self.copied if rel.startswith("checkpoints/packs/"))


def copy_object(src: Backend, dst: Backend, key: str) -> int:
    """Stream one object from ``src`` to ``dst`` (it appears there whole, or not at all); returns its size."""
    with src.open(key) as reader:
        obj = dst.new_object(key.rsplit("/", 1)[0] + "/")
        try:
            pos = 0
            while pos < reader.size:
                data = reader.read(pos, min(_CHUNK, reader.size - pos))
                if not data:
                    raise FileNotFoundError(f"{src.describe(key)} shrank while it was copied")
                os.pwrite(obj.fd, data, pos)
                pos += len(data)
            obj.commit(key)
        except BaseException:
            obj.abort()
            raise
    return reader.size


class _Mirror:
    """One pass copying ``src`` into ``dst`` (see the module doc)."""

    def __init__(self, src: CheckpointStore, dst: CheckpointStore, check: bool) -> None:
        self.src, self.dst, self.check = src, dst, check
        self.report = MirrorReport()
        self.source_problems: dict[str, str | None] = {}  # pack -> its problem at the source (None: sound)

    def run(self, names: list[str] | None = None) -> MirrorReport:
        for name in sorted(self.src.infos, key=lambda n: (self.src.infos[n].step, n)):
            if self.src.infos[name].valid and (names is None or name in names):
                try:
                    self._one(name)
                except FileNotFoundError:
                    self.report.changed.append(f"checkpoints/{name}")  # deleted or repacked meanwhile: next pass
        return self.report

    def _one(self, name: str) -> None:
        raw = self.src.catalog.manifest_bytes(name)
        if raw is None:
            return  # deleted by the source's writer since it was listed
        try:
            manifest = mf.parse(raw, name)
            state = read_state(self.src.backend, name, manifest)
        except (mf.ManifestError, IntegrityError) as exc:
            if self.src.catalog.manifest_bytes(name) != raw:  # deleted by the source's writer while being read
                raise FileNotFoundError(name) from None
            self.report.damaged[f"checkpoints/{name}/manifest.json"] = str(exc)
            return
        there = self.dst.infos.get(name)
        same = there is not None and there.digest == manifest["digest"]
        if same and not self.check and set(there.tags) == set(manifest.get("tags", ())):
            self.report.unchanged += 1
            return
        bad = self._packs(name, manifest)
        if bad and self.src.catalog.manifest_bytes(name) != raw:
            for pack in manifest["packs"]:  # deleted or repacked by the source's writer meanwhile: not damage
                self.source_problems.pop(pack, None)
                self.report.damaged.pop(f"checkpoints/packs/{pack}", None)
            raise FileNotFoundError(name)
        if bad:
            self.report.damaged[f"checkpoints/{name}/manifest.json"] = f"it names a damaged pack ({bad})"
            return
        outcome = self.dst.adopt(name, manifest, state)
        if outcome == "unchanged":
            self.report.unchanged += 1
        else:
            self.report.checkpoints.append(name)
            self.report.copied.append(f"checkpoints/{name}/manifest.json")

    def _packs(self, name: str, manifest: dict) -> str | None:
        """Copy the packs of one checkpoint the destination lacks (or, checking, holds damaged); the first problem
        found at the source, or None."""
        by_pack: dict[str, list[TensorRecord]] = {}
        for t in manifest["tensors"].values():
            by_pack.setdefault(t["pack"], []).append(TensorRecord.from_json(t))
        for pack, recs in sorted(by_pack.items()):
            key = f"packs/{pack}"
            if pack not in self.source_problems:
                problems, _bad = verify_pack(self.src.backend, manifest, pack, recs, self.src.pool)
                self.source_problems[pack] = problems[0] if problems else None
            if self.source_problems[pack]:
                self.report.damaged[f"checkpoints/{key}"] = self.source_problems[pack]  # type: ignore[assignment]
                return self.source_problems[pack]
            size = self.dst.backend.size(key)
            if size != manifest["packs"][pack]["bytes"] or (self.check and self._damaged_there(manifest, pack, recs)):
                self.dst.check_lease()
                self.report.copied_bytes += copy_object(self.src.backend, self.dst.backend, key)
                self.report.copied.append(f"checkpoints/{key}")
                if size is not None:
                    self.report.repaired.append(f"checkpoints/{key}")
            self._parity(pack, manifest["packs"][pack])
        return None

    def _parity(self, pack: str, entry: dict) -> None:
        """The parity object of a pack that has one, where the destination lacks it (or holds another size)."""
        size = entry.get("parity")
        if size and self.dst.backend.size(parity_key(pack)) != size and self.src.backend.size(parity_key(pack)) == size:
            self.dst.check_lease()
            self.report.copied_bytes += copy_object(self.src.backend, self.dst.backend, parity_key(pack))
            self.report.copied.append(f"checkpoints/{parity_key(pack)}")

    def _damaged_there(self, manifest: dict, pack: str, recs: list[TensorRecord]) -> bool:
        return bool(verify_pack(self.dst.backend, manifest, pack, recs, self.dst.pool)[0])


def mirror(src: CheckpointStore, dst: CheckpointStore, *, check: bool = False, names: list[str] | None = None) -> MirrorReport:
    """Copy what ``dst`` lacks of ``src`` (``check``: and re-verify, repairing, what it holds; ``names``: only these
    checkpoints); see the module doc."""
    return _Mirror(src, dst, check).run(names)
