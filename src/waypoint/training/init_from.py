"""Start a new run from existing weights: ``init_from=REF`` (and ``model.init_stacks_from`` for Stack-Wise).

A source (a checkpoint reference, a ``.safetensors`` file or a foreign ``.pt`` read weights-only) is flattened
into module-style keys, without wrapper prefixes or optimizer/RNG state. The task names its targets
(``init_targets``) and may translate foreign layouts (``init_key``); nothing here knows a model family. A key
matches a target exactly, else under the target prefixes that hold most leftover keys (a bare backbone fills
``student.backbone.`` and ``teacher.backbone.``). Mismatches are reported in one table; nothing matching is an
error, and with ``init_from.strict=true`` any mismatch is.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from waypoint.checkpoint.refs import BadReferenceError, open_ref
from waypoint.checkpoint.transfer.foreign import read_foreign
from waypoint.config import ConfigError

log = logging.getLogger(__name__)

FOREIGN_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
#: key segments of training state that is not model weights (never reported as unexpected)
NOT_WEIGHTS = frozenset(
    "optimizer optimizers optimizer_state_dict optimizer_states scheduler scheduler_state_dict lr_scheduler lr_schedulers "
    "fp16_scaler scaler rng rng_state rng_states cuda_rng_state torch_rng_state progress cache".split()
)
#: key segments that wrappers (DDP, torch.compile) insert
WRAPPER_SEGMENTS = frozenset({"module", "_orig_mod"})
#: leading segments of whole-model containers, dropped when the key does not match as it is
CONTAINERS = ("state_dict.", "model_state_dict.", "task.")
_SHOWN = 4


class InitFromError(ConfigError):
    """The init_from source cannot initialise this model (unreadable, nothing matches, or strict and a mismatch)."""


# ---------------------------------------------------------------------------------------------- reading
def flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested state (dicts, lists, tuples) under a ``.``-joined key; other leaves are skipped."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    return out


def _clean_key(key: str) -> str:
    return ".".join(s for s in key.replace("/", ".").split(".") if s not in WRAPPER_SEGMENTS)


@dataclass
class Source:
    """Tensors read from an init_from reference, and what they are."""

    ref: str
    kind: str  # waypoint | safetensors | foreign
    tensors: dict[str, torch.Tensor]
    ignored: int = 0  # optimizer/scheduler/RNG tensors dropped
    detail: str = ""


def read_source(ref: str) -> Source:
    """Read the tensors of ``ref`` (a Waypoint REF, a .safetensors file or a foreign .pt/.pth/.ckpt)."""
    path = Path(ref)
    if path.is_file() and path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            raw, kind, detail = load_file(str(path)), "safetensors", ""
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: say which
            raise InitFromError(f"init_from: {ref} is not a readable safetensors file ({exc})") from None
    elif path.is_file() and path.suffix in FOREIGN_SUFFIXES:
        raw, kind, detail = flatten(read_foreign(path)), "foreign", ""
    elif path.is_file():
        raise InitFromError(f"init_from: {ref} is a file but neither .safetensors nor {'/'.join(FOREIGN_SUFFIXES)}")
    else:
        try:
            mgr, selector = open_ref(ref)  # read-only: nothing is written in the source run
        except BadReferenceError as exc:
            raise InitFromError(
                f"init_from: {exc}; give a run dir, RUN_DIR@SELECTOR, a .safetensors or a .pt/.pth/.ckpt file"
            ) from None
        with mgr:
            state, info = mgr.restore_with_info(selector)
        state = state.get("task", state) if isinstance(state, Mapping) else state
        raw, kind, detail = flatten(state), "waypoint", f"{info.name}, step {info.step}"
    tensors: dict[str, torch.Tensor] = {}
    ignored = 0
    for key, t in raw.items():
        clean = _clean_key(key)
        if NOT_WEIGHTS.intersection(clean.split(".")):
            ignored += 1
        else:
            tensors[clean] = t
    return Source(ref, kind, tensors, ignored, detail)


# ---------------------------------------------------------------------------------------------- matching
@dataclass
class InitReport:
    """What an init_from did: loaded target keys (by source key), and what did not fit."""

    source: Source
    loaded: dict[str, str] = field(default_factory=dict)  # target key -> source key
    missing: list[str] = field(default_factory=list)  # targets nothing loaded
    unexpected: list[str] = field(default_factory=list)  # source keys that name no target
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # target, source, model
    derived: list[str] = field(default_factory=list)  # targets the task filled from loaded ones

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.source.ref,
            "kind": self.source.kind,
            "detail": self.source.detail,
            "loaded": len(self.loaded),
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": [{"key": k, "source": list(a), "model": list(b)} for k, a, b in self.mismatched],
            "derived": len(self.derived),
            "ignored_non_weights": self.source.ignored,
        }

    def table(self) -> str:
        """One short table: loaded by top-level part, missing, unexpected, shape-mismatched, ignored."""

        def names(keys: Iterable[str]) -> str:
            keys = list(keys)
            more = f" ... (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
            return ", ".join(keys[:_SHOWN]) + more

        parts = Counter(k.split(".")[0] for k in self.loaded)
        src = self.source
        rows = [
            f"init_from {src.ref} ({src.kind}{', ' + src.detail if src.detail else ''}):",
            f"  {'loaded':<15}{len(self.loaded):>6}  " + ", ".join(f"{p} {n}" for p, n in sorted(parts.items())),
            f"  {'missing':<15}{len(self.missing):>6}  {names(self.missing)}",
            f"  {'unexpected':<15}{len(self.unexpected):>6}  {names(self.unexpected)}",
            f"  {'shape mismatch':<15}{len(self.mismatched):>6}  "
            + names(f"{k} {list(a)} vs model {list(b)}" for k, a, b in self.mismatched),
        ]
        if self.derived:
            rows.append(
                f"  {'derived':<15}{len(self.derived):>6}  "
                + ", ".join(f"{p} {n}" for p, n in sorted(Counter(k.split(".")[0] for k in self.derived).items()))
                + " (filled by the task from the loaded weights)"
            )
        if src.ignored:
            rows.append(f"  {'not weights':<15}{src.ignored:>6}  optimizer/scheduler/RNG tensors, not loaded")
        return "\n".join(rows)


def _exact(key: str, targets: Mapping[str, torch.Tensor]) -> str | None:
    while True:
        if key in targets:
            return key
        container = next((c for c in CONTAINERS if key.startswith(c)), None)
        if container is None:
            return None
        key = key[len(container) :]


def match(source: Source, targets: Mapping[str, torch.Tensor], translate: Any = None) -> InitReport:
    """Pair source tensors with the task's targets (no copying): exact names first, then by shared prefix."""
    report = InitReport(source)
    pairs: dict[str, str] = {}  # target -> source key
    leftover: dict[str, str] = {}  # source key -> the key to try under a prefix
    for key in source.tensors:
        name = translate(key) if translate is not None else key
        target = _exact(name, targets)
        if target is not None:
            pairs.setdefault(target, key)
        else:
            leftover[key] = name
    if leftover:  # e.g. a bare backbone state_dict: fill every target prefix that holds most of these keys
        by_suffix: dict[str, list[str]] = {}
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts)):
                by_suffix.setdefault(".".join(parts[i:]), []).append(".".join(parts[:i]) + ".")
        votes = Counter(p for name in set(leftover.values()) for p in set(by_suffix.get(name, ())))
        need = max(1, len(set(leftover.values())) // 2)
        prefixes = [p for p, n in votes.items() if n >= need]
        for key, name in list(leftover.items()):
            hits = [p + name for p in prefixes if p + name in targets and p + name not in pairs]
            for t in hits:
                pairs[t] = key
            if hits:
                del leftover[key]
    report.unexpected = sorted(leftover)
    for target, key in sorted(pairs.items()):
        have, want = tuple(source.tensors[key].shape), tuple(targets[target].shape)
        if have != want:
            report.mismatched.append((target, have, want))
        else:
            report.loaded[target] = key
    report.missing = sorted(t for t in targets if t not in pairs)
    return report


def init_weights(task: Any, ref: str, *, strict: bool = False) -> InitReport:
    """Copy the matching tensors of ``ref`` into the task's (set-up) model before step 0; report what fit.
    ``InitFromError``, with nothing copied, when nothing matches or, with ``strict``, anything mismatches."""
    targets_of = getattr(task, "init_targets", None)
    if targets_of is None:
        raise InitFromError(f"{type(task).__name__} does not support init_from (it has no init_targets())")
    targets: dict[str, torch.Tensor] = targets_of()
    source = read_source(ref)
    report = match(source, targets, getattr(task, "init_key", None))
    table = report.table()
    if not report.loaded:
        raise InitFromError(f"init_from: nothing in {ref} matches this model's weights; refusing to start from it\n{table}")
    if strict and not report.clean:
        raise InitFromError(f"init_from.strict=true and {ref} does not match this model exactly\n{table}")
    with torch.no_grad():
        for target, key in report.loaded.items():
            targets[target].copy_(_placed_like(source.tensors[key], targets[target]))
    after = getattr(task, "after_init_from", None)
    if after is not None:  # the task may fill more from what was loaded (DINO: the teacher copies the student)
        report.derived = sorted(set(after(set(report.loaded)) or ()))
        report.missing = [k for k in report.missing if k not in set(report.derived)]
    log.info("%s", table)
    return report


def _placed_like(tensor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``tensor`` on ``target``'s device, and sharded like it when ``target`` is a shard (hardware=fsdp; collective)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(target, DTensor):
        return distribute_tensor(tensor.to(target.device), target.device_mesh, target.placements)
    return tensor.to(target.device)


# ---------------------------------------------------------------------------------------------- Stack-Wise stacks
_STACK = re.compile(r"^(?:.*\.)?stacks\.(\d+)\.(.+)$")


def stacks_state(ref: str) -> dict[str, Any]:
    """``model.init_stacks_from``: a Waypoint REF (its task state) or a file of stacks, as the task's init state.

    A file exported from one stack (``waypoint export RUN@best s.safetensors --part task/rack/stacks/0``, keys
    ``blocks.<j>...``) becomes stack 0; a file with ``[rack.]stacks.<i>.`` keys keeps its stacks, and its
    ``embed.``/``head.`` tensors when present.
    """
    path = Path(ref)
    if not path.is_file():
        mgr, selector = open_ref(ref)
        with mgr:
            state = mgr.restore(selector)
        return state["task"] if isinstance(state, dict) and "task" in state else state
    source = read_source(ref)
    stacks: dict[str, dict[str, torch.Tensor]] = {}
    rack: dict[str, Any] = {}
    for key, t in source.tensors.items():
        for container in ("task.", "rack."):
            key = key.removeprefix(container)
        m = _STACK.match(key)
        if m:
            stacks.setdefault(m.group(1), {})[m.group(2)] = t
        elif key.startswith(("embed.", "head.")):
            part, _, rest = key.partition(".")
            rack.setdefault(part, {})[rest] = t
        elif key.startswith("blocks."):
            stacks.setdefault("0", {})[key] = t
    if not stacks:
        raise InitFromError(
            f"model.init_stacks_from: {ref} holds no stack tensors (keys 'blocks.<j>.' of one exported "
            "stack, or 'stacks.<i>.blocks.<j>.')"
        )
    return {"rack": {**rack, "stacks": stacks}}
