"""Rack structure as data: per-stack specs, building stacks from saved tensors, stack extraction, init stacks.

State keys of a Stack-Wise task (nested dicts; the checkpoint codec joins them with ``/``)::

    rack/meta                          JSON: dims, per-stack spec (precision, dtype, frozen, lora, n_blocks, ...)
    rack/embed/weight                  byte embedding
    rack/stacks/<i>/blocks.<j>.<...>   stack i's base weights (and LoRA: <linear>.lora.{down,up,scaling})
    rack/head/norm.weight, rack/head/lm_head.weight
    optimizer/...                      AdamW state of the trainable parameters
    cache/prefix, cache/items/<index>  activation cache (only when model.cache_activations is on)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch

from waypoint.tasks.stackwise.model import Dims, LoRA, Stack

PRECISIONS = ("full", "half")
STACK_PREFIX = "rack/stacks/"
_STACK_KEY = re.compile(r"^rack/stacks/(\d+)/(.+)$")


class StackStateError(ValueError):
    """Stack tensors that do not fit the configured rack, with what to do about it."""


@dataclass
class StackSpec:
    """What a stack is, independent of its weights (stored in ``rack/meta``)."""

    n_blocks: int
    precision: str  # "full" | "half"
    dtype: str  # torch dtype name, e.g. "float32", "bfloat16"
    frozen: bool = False
    lora_rank: Optional[int] = None
    lora_alpha: Optional[float] = None
    source: str = "fresh"  # "fresh" | "init"
    appended_at: int = 0  # optimizer steps completed when the stack was added

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def precision_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``full`` -> float32; ``half`` -> bfloat16 on CPU, float16 on GPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"stack precision must be one of {PRECISIONS}, got '{precision}'")
    if precision == "full":
        return torch.float32
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def dtype_from_name(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (as stored in ``rack/meta``)."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise StackStateError(f"unknown dtype name '{name}' in rack/meta")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def flatten_state(state: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested state -> ``{"a/b/c": leaf}``; keys that already hold ``/`` pass through unchanged."""
    flat: dict[str, Any] = {}
    for key, value in state.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_state(value, path + "/"))
        else:
            flat[path] = value
    return flat


def extract_stack(state: Mapping[str, Any], index: int, adapters: bool = True) -> dict[str, torch.Tensor]:
    """Stack ``index``'s tensors from a task state (nested or flat), keyed relative to the stack."""
    prefix = f"{STACK_PREFIX}{index}/"
    out = {k[len(prefix) :]: v for k, v in flatten_state(state).items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}
    if not adapters:
        out = {k: v for k, v in out.items() if ".lora." not in k}
    if not out:
        raise StackStateError(f"the state holds no tensors under '{prefix}'")
    return out


def stack_indices(state: Mapping[str, Any]) -> list[int]:
    """Indices ``i`` that have keys under ``rack/stacks/<i>/``, sorted."""
    found = {int(m.group(1)) for k in flatten_state(state) if (m := _STACK_KEY.match(k))}
    return sorted(found)


def n_blocks_of(tensors: Mapping[str, torch.Tensor]) -> int:
    """Number of blocks in a stack's tensors (``blocks.<j>.`` prefixes)."""
    blocks = {int(m.group(1)) for k in tensors if (m := re.match(r"^blocks\.(\d+)\.", k))}
    if not blocks or blocks != set(range(len(blocks))):
        raise StackStateError(f"stack tensors hold blocks {sorted(blocks)}; expected blocks 0..n-1")
    return len(blocks)


def stack_from_tensors(tensors: Mapping[str, torch.Tensor], dims: Dims, device: torch.device, what: str) -> Stack:
    """Build a stack shaped like ``tensors`` (blocks, dtype, adapters) and load them bit-exactly."""
    with torch.device("meta"):  # no init work and no draw from the global RNG: every tensor is loaded below
        stack = Stack(dims, n_blocks_of(tensors))
        stack.to(tensors["blocks.0.attn.W_q.weight"].dtype)
        for name, linear in stack.linears():
            down = tensors.get(f"{name}.lora.down")
            if down is not None:
                linear.lora = LoRA(linear.in_features, linear.out_features, down.shape[0], 1.0)
    stack.to_empty(device=device)
    try:
        stack.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as exc:
        raise StackStateError(
            f"{what} does not fit d_model={dims.d_model}, n_heads={dims.n_heads}, d_ff={dims.d_ff}: "
            f"{str(exc).splitlines()[-1].strip()}; use the model sizes it was trained with."
        ) from None
    return stack


def stack_spec_of(stack: Stack, frozen: bool, source: str, appended_at: int) -> StackSpec:
    """Describe a built stack."""
    loras = [m.lora for _, m in stack.linears() if m.lora is not None]
    rank = loras[0].rank if loras else None
    alpha = float(loras[0].scaling) * rank if loras and rank else None
    precision = "full" if stack.dtype == torch.float32 else "half"
    return StackSpec(len(stack.blocks), precision, dtype_name(stack.dtype), frozen, rank, alpha, source, appended_at)


@dataclass
class InitStacks:
    """Stacks (and optionally embedding/head) to start a run from, taken from an earlier run's state."""

    stacks: list[dict[str, torch.Tensor]]
    embed: Optional[dict[str, torch.Tensor]]
    head: Optional[dict[str, torch.Tensor]]


def parse_init_stacks(init: Mapping[str, Any], select: Optional[list[int]] = None) -> InitStacks:
    """Accept a full task state, its flat tensor table, or ``{i: stack tensors}``; return the stacks ``select`` names,
    in that order (all of them, by index, when None): they become stacks 0, 1, ... of the new rack."""
    flat = flatten_state(init)
    by_index: dict[int, dict[str, torch.Tensor]] = {i: extract_stack(flat, i) for i in stack_indices(flat)}
    if not by_index:
        for key, value in flat.items():
            head, _, rest = key.partition("/")
            if head.isdigit() and rest and isinstance(value, torch.Tensor):
                by_index.setdefault(int(head), {})[rest] = value
    if not by_index:
        raise StackStateError(
            "init_stacks holds no stacks; give a Stack-Wise state (keys 'rack/stacks/<i>/...') or {i: stack tensors}."
        )
    missing = sorted(set(select or ()) - set(by_index))
    if missing or (select is not None and (not select or len(set(select)) < len(select))):
        raise StackStateError(
            f"model.init_stacks_indices={select} must name distinct stacks of the {sorted(by_index)} that init_stacks holds."
        )
    stacks = [by_index[i] for i in (select if select is not None else sorted(by_index))]

    def part(prefix: str) -> Optional[dict[str, torch.Tensor]]:
        found = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}
        return found or None

    return InitStacks(stacks, part("rack/embed/"), part("rack/head/"))
