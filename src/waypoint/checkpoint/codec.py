"""Nested training state  <->  (flat tensors, JSON tree). Never pickle.

The JSON tree mirrors the state. Plain JSON values stay as they are; everything JSON cannot say
directly becomes a one-key object whose key starts with ``__``:

- ``{"__tensor__": KEY}`` a torch tensor, stored in the tensor table under KEY
- ``{"__ndarray__": KEY}`` a numpy array, stored as a tensor, restored as a numpy array
- ``{"__alias__": [KEY, FIRST]}`` the very same tensor object (same storage view) as the earlier tensor
  FIRST; it is also in the tensor table under its own KEY (same content id, stored once), so tools that
  read one part of a checkpoint find every key
- ``{"__tuple__": [...]}`` a tuple
- ``{"__dict__": [[key, value], ...]}`` a dict whose keys are not all plain strings (e.g. int keys
  of an optimizer state), or that would collide with these markers
- ``{"__float__": "nan" | "inf" | "-inf"}`` a non-finite float
- ``{"__numpy_scalar__": [dtype, value]}`` a numpy scalar such as ``np.float32(1.5)``

Tensor keys are the path of the value in the state, parts joined by ``/`` (a ``/`` or ``~`` inside a
part is escaped as ``~1`` / ``~0``, as in JSON pointers), so ``model/blocks.0.attn.qkv.weight``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

_MARKERS = ("__tensor__", "__ndarray__", "__alias__", "__tuple__", "__dict__", "__float__", "__numpy_scalar__")


class UnsupportedValueError(CheckpointError, TypeError):
    """A state value that is neither a tensor nor JSON-representable."""


def encode(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into a flat ``{key: tensor}`` table and a JSON-able tree."""
    enc = _Encoder()
    tree = enc.walk(state, "")
    return enc.tensors, tree


def _child(path: str, key: Any) -> str:
    """The tensor key of ``key`` under ``path`` (``/`` and ``~`` in a part escaped as ``~1`` and ``~0``)."""
    part = str(key).replace("~", "~0").replace("/", "~1")
    return f"{path}/{part}" if path else part


class _Encoder:
    """One ``encode``: the tensors found so far, and which storage each came from (aliases are stored once)."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.seen: dict[tuple, str] = {}

    def tensor_ref(self, value: torch.Tensor, path: str, marker: str) -> dict[str, Any]:
        if value.is_sparse or value.layout != torch.strided:
            raise UnsupportedValueError(f"state value at '{path}' is a {value.layout} tensor; only dense tensors can be saved")
        if value.is_meta:
            raise UnsupportedValueError(f"state value at '{path}' is a meta tensor without data")
        identity = None
        if value.numel():
            storage = value.untyped_storage().data_ptr()
            identity = (value.device, storage, value.storage_offset(), tuple(value.shape), tuple(value.stride()), value.dtype)
        key = path or "_"
        if marker == "__tensor__" and identity is not None and identity in self.seen:
            self.tensors[key] = self.tensors[self.seen[identity]]
            return {"__alias__": [key, self.seen[identity]]}
        self.tensors[key] = value
        if marker == "__tensor__" and identity is not None:
            self.seen[identity] = key
        return {marker: key}

    def walk(self, value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            return self.tensor_ref(value.detach(), path, "__tensor__")
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise UnsupportedValueError(f"state value at '{path}' is a numpy object array; only numeric arrays can be saved")
            return self.tensor_ref(torch.from_numpy(np.ascontiguousarray(value)), path, "__ndarray__")
        if isinstance(value, np.generic):
            return {"__numpy_scalar__": [value.dtype.str, value.item()]}
        if value is None or isinstance(value, (bool, str, int)):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            return {"__float__": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
        if isinstance(value, dict):
            return self.mapping(value, path)
        if isinstance(value, (list, tuple)):
            encoded = [self.walk(v, f"{path}/{i}" if path else str(i)) for i, v in enumerate(value)]
            return {"__tuple__": encoded} if isinstance(value, tuple) else encoded
        raise UnsupportedValueError(
            f"state value at '{path or '/'}' is a {type(value).__module__}.{type(value).__qualname__}, "
            "which is neither a tensor nor JSON-representable; convert it (e.g. to a dict or str) before saving"
        )

    def mapping(self, value: dict, path: str) -> Any:
        if all(isinstance(k, str) and not k.startswith("__") for k in value):  # else it could pass for a marker
            return {k: self.walk(v, _child(path, k)) for k, v in value.items()}
        items = []
        for k, v in value.items():
            if not (k is None or isinstance(k, (str, int, float, bool))):
                raise UnsupportedValueError(
                    f"state dict at '{path or '/'}' has a key of type {type(k).__name__}; "
                    "keys must be str, int, float, bool or None"
                )
            items.append([self.walk(k, path), self.walk(v, _child(path, k))])
        return {"__dict__": items}


def decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Rebuild the nested state from a JSON tree and a ``{key: tensor}`` table."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((marker, payload),) = node.items()
            if marker == "__tensor__":
                return tensors[payload]
            if marker == "__alias__":
                return tensors[payload[1]]
            if marker == "__ndarray__":
                return tensors[payload].numpy()
            if marker == "__tuple__":
                return tuple(walk(v) for v in payload)
            if marker == "__dict__":
                return {walk(k): walk(v) for k, v in payload}
            if marker == "__float__":
                return float(payload)
            if marker == "__numpy_scalar__":
                return np.dtype(payload[0]).type(payload[1])
        return {k: walk(v) for k, v in node.items()}

    return walk(tree)


def _tensor_markers(node: Any) -> Iterator[tuple[str, Any]]:
    """Every ``(marker, payload)`` of a JSON tree that refers to tensors (``__tensor__``, ``__ndarray__``, ``__alias__``)."""
    if isinstance(node, list):
        for v in node:
            yield from _tensor_markers(v)
    elif isinstance(node, dict):
        if len(node) == 1:
            ((marker, payload),) = node.items()
            if marker in ("__tensor__", "__ndarray__", "__alias__"):
                yield marker, payload
                return
        for v in node.values():
            yield from _tensor_markers(v)


def alias_keys(tree: Any) -> set[str]:
    """Keys that are aliases of an earlier tensor (restored from that tensor, not read again)."""
    return {payload[0] for marker, payload in _tensor_markers(tree) if marker == "__alias__"}


def tensor_keys(tree: Any) -> set[str]:
    """The tensor keys a JSON tree refers to (aliases included)."""
    return {key for marker, payload in _tensor_markers(tree) for key in (payload if marker == "__alias__" else [payload])}
