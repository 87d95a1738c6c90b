"""Moving checkpoints in and out of a store: export a part as safetensors/.pt, import foreign files."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from .. import dcp
from ..codec import UnsupportedValueError, encode
from ..durable import create_exclusive, fsync_dir, rename_noreplace
from ..errors import CheckpointError
from ..manager import CheckpointManager
from .foreign import read_foreign

#: recognised layouts of foreign checkpoints: name -> keys that identify it
FOREIGN_LAYOUTS: dict[str, tuple[str, ...]] = {
    "lightning": ("state_dict", "pytorch-lightning_version"),
    "lightning-like": ("state_dict", "global_step"),
    "dino-upstream": ("student", "teacher"),
    "student-teacher": ("student_state_dict", "teacher_state_dict"),
    "model-optimizer": ("model_state_dict",),
    "hf-like": ("model", "optimizer"),
}


def part_tensors(mgr: CheckpointManager, name: str, part: str | None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint whose key starts with ``part``, keyed by the rest in module style (``a.b.c``)."""
    prefix = (part or "").rstrip("/.")
    table = mgr.manifest(name).tensors

    def wanted(k: str) -> bool:
        return not prefix or k == prefix or k.startswith((prefix + "/", prefix + "."))

    keys = [k for k in table if wanted(k)]
    if not keys:
        sample = ", ".join(sorted({k.split("/")[0] for k in table})[:8])
        raise CheckpointError(f"no tensor key of {name} starts with '{part}'; top-level parts are: {sample}")
    out = {}
    tree = mgr.tree(name)
    if dcp.is_sharded(tree):  # a sharded save: one full tensor per key, assembled from the ranks' chunks
        _, full = dcp.consolidate(tree, dict(mgr.tensors(name)))
        pairs: Any = ((k, v) for k, v in full.items() if wanted(k))
    else:
        pairs = mgr.tensors(name, keys)
    for key, tensor in pairs:
        short = key[len(prefix) :].lstrip("/.") if prefix else key
        out[(short or key.rsplit("/", 1)[-1]).replace("/", ".").replace("~1", "/").replace("~0", "~")] = tensor
    return out


def export_checkpoint(
    mgr: CheckpointManager, selector: str, out: str | os.PathLike, *, part: str | None = None, fmt: str = "safetensors"
) -> dict[str, Any]:
    """Write the tensors of one checkpoint (or of one part of it) to a safetensors or .pt file."""
    info = mgr.one(selector)
    tensors = part_tensors(mgr, info.name, part)
    if fmt not in ("safetensors", "pt"):
        raise CheckpointError(f"unknown export format '{fmt}'; use safetensors or pt")
    out = Path(out)
    if os.path.lexists(out):
        raise CheckpointError(f"{out} already exists; choose another output path or remove it first")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # A fresh name, created exclusively without following links: a planted file or symlink is never written through.
        tmp = out.with_name(f".tmp-{out.name}-{uuid.uuid4().hex[:12]}")
        fd = create_exclusive(tmp)
    except OSError as exc:
        raise CheckpointError(f"cannot write {out} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if fmt == "safetensors":
                f.write(
                    save_safetensors(
                        {k: v.contiguous() for k, v in tensors.items()},
                        metadata={"waypoint_checkpoint": info.name, "step": str(info.step), "part": part or ""},
                    )
                )
            else:
                torch.save(tensors, f)
            f.flush()
            os.fsync(f.fileno())
        rename_noreplace(tmp, out)
        fsync_dir(out.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise CheckpointError(f"{out} appeared while exporting; it was left alone") from None
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot write {out} ({exc.strerror or exc})") from None
        raise
    return {
        "checkpoint": info.name,
        "step": info.step,
        "part": part,
        "format": fmt,
        "path": str(out),
        "tensors": len(tensors),
        "bytes": out.stat().st_size,
    }


def detect_layout(obj: Any) -> str:
    """The name of a foreign checkpoint's layout (``plain-state-dict`` for a flat dict of tensors)."""
    if isinstance(obj, Mapping):
        for name, keys in FOREIGN_LAYOUTS.items():
            if all(k in obj for k in keys):
                return name
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return "plain-state-dict"
        return "dict"
    if isinstance(obj, torch.Tensor):
        return "tensor"
    return type(obj).__name__


def _foreign_step(obj: Any) -> tuple[int, int | None]:
    if not isinstance(obj, Mapping):
        return 0, None
    step = next((obj[k] for k in ("global_step", "step", "iteration") if isinstance(obj.get(k), int)), 0)
    epoch = obj.get("epoch") if isinstance(obj.get("epoch"), int) else None
    return int(step), epoch


class ImportRefusedError(CheckpointError):
    """An import that would mix a foreign checkpoint into a run's own (asks for ``force``)."""


def _refuse_unless_forced(mgr: CheckpointManager, force: bool) -> None:
    own = [i.name for i in mgr.list() if "imported" not in i.tags]
    if own and not force:
        raise ImportRefusedError(
            f"{mgr.root} already holds {len(own)} training checkpoint(s); import into a new run directory, "
            "or pass --force to add the foreign checkpoint there (resume=auto never takes it)"
        )


def import_checkpoint(
    path: str | os.PathLike, mgr: CheckpointManager, *, step: int | None = None, force: bool = False, max_bytes: int | None = None
) -> dict[str, Any]:
    """Import a foreign ``.pt/.pth/.ckpt`` file (``read_foreign``) as a new checkpoint tagged ``imported``, which
    ``latest`` never takes; a store holding training checkpoints refuses it unless ``force``."""
    _refuse_unless_forced(mgr, force)
    return _save_imported(path, read_foreign(path, max_bytes=max_bytes), mgr, step)


def import_into(
    path: str | os.PathLike,
    root: str | os.PathLike,
    *,
    step: int | None = None,
    force: bool = False,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """``import_checkpoint`` into the checkpoints root ``root``, which is created (and locked) only once the
    file has been read: a refused or unreadable file leaves the destination exactly as it was."""
    root = Path(root)
    if root.is_dir():
        with CheckpointManager(root, read_only=True) as reader:
            _refuse_unless_forced(reader, force)
    state = read_foreign(path, max_bytes=max_bytes)
    _step_to_record(path, state, step)  # refused before anything is created
    with _storable(path):  # nothing is copied before the whole state is known to be storable
        encode(state)
    with CheckpointManager(root) as mgr:
        _refuse_unless_forced(mgr, force)
        return _save_imported(path, state, mgr, step)


@contextlib.contextmanager
def _storable(path: str | os.PathLike) -> Iterator[None]:
    """A value the store cannot hold, met within, becomes a one-sentence CheckpointError naming ``path``."""
    try:
        yield
    except UnsupportedValueError as exc:
        raise CheckpointError(f"{path} holds a value the checkpoint store cannot hold: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to store") from None


def _step_to_record(path: str | os.PathLike, state: Any, step: int | None) -> tuple[int, int | None]:
    found_step, epoch = _foreign_step(state)
    if step is None and found_step < 0:
        raise CheckpointError(
            f"{path} records step {found_step}, and a checkpoint step cannot be negative; "
            "pass --step N to choose the step to record"
        )
    return (found_step if step is None else step), epoch


def _save_imported(path: str | os.PathLike, state: dict[str, Any], mgr: CheckpointManager, step: int | None) -> dict[str, Any]:
    layout = detect_layout(state if set(state) != {"value"} else state["value"])
    step, epoch = _step_to_record(path, state, step)
    meta = {"imported_from": str(Path(path).resolve()), "layout": layout}
    with _storable(path):
        info = mgr.save(state, step=step, epoch=epoch, tags=("imported",), meta=meta)
    assert info is not None
    return {
        "checkpoint": info.name,
        "step": info.step,
        "layout": layout,
        "digest": info.digest,
        "logical_bytes": info.logical_bytes,
    }
