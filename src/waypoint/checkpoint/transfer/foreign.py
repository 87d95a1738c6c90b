"""Reading foreign ``.pt/.pth/.ckpt`` files without ever executing code from them.

``read_foreign(path)`` is the one entry point for a checkpoint written by something else (``waypoint import``,
``init_from``): a nested dict of tensors, arrays, numbers, strings and containers, or a one-sentence error.

- Unpickling is ``torch.load(weights_only=True)``: only tensors, containers and an allow-list of
  data-only types (numpy arrays, dtypes and scalars, ``TorchVersion``, ``argparse.Namespace``) can be
  built; a pickle that would call anything else is refused (``UnsafeCheckpointError``).
- The file's expanded size is checked *before* anything is materialised (``ImportTooLargeError``): a
  zip archive whose members expand past ``DEFAULT_RATIO`` times the file size (plus ``DEFAULT_SLACK``)
  is a decompression bomb unless ``max_bytes`` allows it.
- The loaded object is bounded before it is walked: at most ``MAX_DEPTH`` levels of nesting and
  ``MAX_VALUES`` values counted as a walk would visit them (shared references count each time), so a
  tiny pickle of 10^8 shared references is refused in about a second instead of exhausting memory.
- Normalised to plain types (``Namespace`` and ``OrderedDict`` to dicts, ...), with the ``module.`` (DDP) and
  ``_orig_mod.`` (torch.compile) prefixes stripped from a dict whose keys all carry them.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import stat
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from waypoint.units import human_bytes

from ..errors import CheckpointError

DEFAULT_RATIO = 4  # a torch.save archive stores tensors uncompressed: it expands ~1x
DEFAULT_SLACK = 64 << 20  # bytes allowed on top of the ratio (small files with compressed members)
MAX_DEPTH = 200  # nesting levels (a training state needs about 10)
MAX_VALUES = 1_000_000  # values visited by a walk (a large optimizer state holds ~10^4-10^5)
PREFIXES = ("module.", "_orig_mod.")


class UnsafeCheckpointError(CheckpointError):
    """A foreign checkpoint whose unpickling would need arbitrary code (refused)."""


class ImportTooLargeError(CheckpointError):
    """A foreign checkpoint that would expand past the allowed size (a decompression bomb, or ``max_bytes``)."""


def _safe_globals() -> list[Any]:
    """Data-only types a weights-only unpickler may build: none of them can run code."""
    found: list[Any] = [np.ndarray, np.dtype, argparse.Namespace, OrderedDict]
    try:
        from torch.torch_version import TorchVersion

        found.append(TorchVersion)
    except ImportError:  # pragma: no cover - every supported torch has it
        pass
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        for name in ("_reconstruct", "scalar"):
            try:
                obj = getattr(__import__(module, fromlist=[name]), name)
            except (ImportError, AttributeError):
                continue
            found.append((obj, f"{module}.{name}"))  # files written under numpy 1.x name numpy.core.*
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and n != "StringDType"]
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_size(path: Path, max_bytes: int | None = None) -> int:
    """The bytes ``path`` would expand to; ImportTooLargeError past the limit (read from the zip directory only)."""
    size = os.stat(path).st_size
    expanded = size
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                expanded = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    limit = max_bytes if max_bytes is not None else DEFAULT_RATIO * size + DEFAULT_SLACK
    if expanded > limit:
        why = (
            f"more than --max-bytes {max_bytes}"
            if max_bytes is not None
            else f"more than {DEFAULT_RATIO}x its size plus {human_bytes(DEFAULT_SLACK)}, which a PyTorch checkpoint never needs"
        )
        grown = f"{path} ({human_bytes(size)}) would expand to {human_bytes(expanded)}"
        raise ImportTooLargeError(f"{grown}, {why}; pass --max-bytes {expanded} if you trust it")
    return expanded


def load_foreign(path: str | os.PathLike, *, max_bytes: int | None = None) -> Any:
    """Load a foreign PyTorch checkpoint with ``torch.load(weights_only=True)`` and the data-only allow-list."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path} is not a file")
    if st.st_size == 0:
        raise CheckpointError(f"{path} is empty, not a PyTorch checkpoint")
    check_size(path, max_bytes)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        try:
            names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # noqa: BLE001 - only used to word the message
            names = ""
        if not names:  # a raw pickle (no zip directory to list): torch's message names what it refused
            names = ", ".join(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", str(exc))))
        if not names and "Weights only load failed" in str(exc):
            names = "objects outside the allow-list"
        if not names:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({_first_line(exc)[:200]})") from None
        raise UnsafeCheckpointError(
            f"{path} was refused: unpickling it would call {names}, which can run arbitrary code; only "
            "weights-only checkpoints (tensors, numbers, strings, containers, numpy data) can be imported"
        ) from None
    except MemoryError:
        raise CheckpointError(f"{path} needs more memory to load than is available") from None
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to load") from None
    except Exception as exc:  # noqa: BLE001 - anything else a damaged or foreign file makes torch.load raise
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {_first_line(exc)[:200]})"
        ) from None


def check_bounds(obj: Any, what: str = "the file") -> None:
    """Refuse an object nested deeper than MAX_DEPTH or with more than MAX_VALUES values (iterative walk)."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    visited = 0
    while stack:
        value, depth = stack.pop()
        visited += 1
        if visited > MAX_VALUES:
            raise CheckpointError(
                f"{what} holds more than {MAX_VALUES:,} values (counting shared references each "
                "time), far more than a training state; refused"
            )
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{what} is nested more than {MAX_DEPTH} levels deep; refused")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            stack.extend((k, depth + 1) for k in value if isinstance(k, tuple))
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, argparse.Namespace):
            stack.extend((v, depth + 1) for v in vars(value).values())


def _strip(keys: list[Any]) -> dict[Any, Any] | None:
    """Old key -> new key when every key is a str carrying one prefix (repeatedly: module._orig_mod.x)."""
    if not keys or not all(isinstance(k, str) for k in keys):
        return None
    mapping = {k: k for k in keys}
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if all(v.startswith(prefix) and len(v) > len(prefix) for v in mapping.values()):
                mapping = {k: v[len(prefix) :] for k, v in mapping.items()}
                changed = True
    return mapping if any(k != v for k, v in mapping.items()) else None


def normalise(obj: Any) -> Any:
    """Plain containers and types the store can hold, prefixes stripped; call ``check_bounds`` first (recursive)."""
    from torch.torch_version import TorchVersion

    if isinstance(obj, argparse.Namespace):
        obj = dict(vars(obj))
    if isinstance(obj, dict):
        mapping = _strip(list(obj)) or {}
        return {mapping.get(k, k) if isinstance(k, str) else k: normalise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [normalise(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(normalise(v) for v in obj)
    if isinstance(obj, TorchVersion):
        return str(obj)
    if isinstance(obj, np.dtype):
        return str(obj)
    return obj


def read_foreign(path: str | os.PathLike, *, max_bytes: int | None = None) -> dict[str, Any]:
    """The contents of a foreign checkpoint file as a nested dict (a non-dict as ``{"value": obj}``), read without
    executing code; a one-sentence ``CheckpointError`` for one that is unreadable, unsafe, too large or too deep."""
    obj = load_foreign(path, max_bytes=max_bytes)
    check_bounds(obj, str(path))
    obj = normalise(obj)
    return obj if isinstance(obj, dict) else {"value": obj}
