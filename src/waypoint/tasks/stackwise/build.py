"""RackBuilder: grows a Rack in append mode, freezes it, attaches adapters, and saves/rebuilds its structure.

Trainability rules (applied by ``apply_trainability`` after every structural change):
- the embedding trains until the first append (or stays frozen when it came frozen with ``init_stacks``);
- a stack's base weights train until the next stack is appended, then never again;
- LoRA adapters (on frozen stacks, when ``lora.enabled``) and the head always train.
The frozen prefix that the activation cache may hold is the embedding plus the leading frozen stacks
without trainable adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from waypoint.tasks.common import sample_generator
from waypoint.tasks.stackwise.model import Dims, Rack, Stack, attach_lora, init_stack
from waypoint.tasks.stackwise.rack import (
    InitStacks,
    StackSpec,
    StackStateError,
    dtype_from_name,
    stack_from_tensors,
    stack_spec_of,
)

META_FORMAT = "waypoint.stackwise/1"


class RackBuilder:
    """Owns the Rack module and the per-stack specs."""

    def __init__(self, dims: Dims, seed: int, device: torch.device, lora: Any) -> None:
        self.dims, self.seed, self.device, self.lora = dims, seed, device, lora
        self.rack = self._empty_rack()
        self.specs: list[StackSpec] = []
        self.embed_frozen = False
        self.initial_stacks = 1
        self.phase_start = 0

    # -- construction -------------------------------------------------------------------------------
    def _empty_rack(self) -> Rack:
        """A rack with embedding and head initialised from ``seed`` and no stacks (the global RNG is untouched)."""
        with torch.device("meta"):
            rack = Rack(self.dims)
        rack.to_empty(device=torch.device("cpu"))
        gen = sample_generator(self.seed, "stackwise-embed-head")
        with torch.no_grad():
            rack.embed.weight.copy_(torch.randn(rack.embed.weight.shape, generator=gen) * 0.02)
            rack.head.norm.weight.fill_(1.0)
            rack.head.lm_head.weight.copy_(torch.randn(rack.head.lm_head.weight.shape, generator=gen) * 0.02)
        return rack.to(self.device)

    def _fresh_stack(self, index: int, n_blocks: int, dtype: torch.dtype) -> Stack:
        with torch.device("meta"):
            stack = Stack(self.dims, n_blocks)
        stack.to_empty(device=torch.device("cpu"))
        init_stack(stack, sample_generator(self.seed, "stackwise-stack", index))
        return stack.to(dtype).to(self.device)

    def _adapt_frozen(self) -> None:
        if not self.lora.enabled:
            return
        for i, (stack, spec) in enumerate(zip(self.rack.stacks, self.specs)):
            if spec.frozen and attach_lora(
                stack,
                int(self.lora.rank),
                float(self.lora.alpha),
                tuple(self.lora.targets),
                sample_generator(self.seed, "stackwise-lora", i),
            ):
                spec.lora_rank, spec.lora_alpha = int(self.lora.rank), float(self.lora.alpha)

    def start_fresh(self, n_blocks: int, dtypes: list[torch.dtype]) -> None:
        """``len(dtypes)`` fresh stacks, trainable from step 0: one to grow from, or the final rack (end to end)."""
        for index, dtype in enumerate(dtypes):
            self.rack.stacks.append(self._fresh_stack(index, n_blocks, dtype))
            self.specs.append(stack_spec_of(self.rack.stacks[index], frozen=False, source="fresh", appended_at=0))
        self.initial_stacks, self.phase_start = len(self.specs), 0
        self.apply_trainability()

    def start_from(self, init: InitStacks, frozen: bool) -> None:
        """Stacks (and embedding/head when given) from an earlier run, kept in their saved dtype."""
        for i, tensors in enumerate(init.stacks):
            stack = stack_from_tensors(tensors, self.dims, self.device, f"init stack {i}")
            self.rack.stacks.append(stack)
            self.specs.append(stack_spec_of(stack, frozen=frozen, source="init", appended_at=0))
        for name, part, module in (("embedding", init.embed, self.rack.embed), ("head", init.head, self.rack.head)):
            if part is not None:
                try:
                    module.load_state_dict(part, strict=True)
                except RuntimeError as exc:
                    raise StackStateError(
                        f"the init {name} does not fit d_model={self.dims.d_model}: {str(exc).splitlines()[-1].strip()}"
                    ) from None
        self.embed_frozen = frozen and init.embed is not None
        self.initial_stacks = len(self.specs)
        self._adapt_frozen()
        self.apply_trainability()

    def append(self, n_blocks: int, dtype: torch.dtype, step: int) -> None:
        """Freeze everything so far (adding adapters when enabled) and append a fresh stack."""
        for spec in self.specs:
            spec.frozen = True
        self.embed_frozen = True
        self._adapt_frozen()
        index = len(self.specs)
        self.rack.stacks.append(self._fresh_stack(index, n_blocks, dtype))
        self.specs.append(stack_spec_of(self.rack.stacks[index], frozen=False, source="fresh", appended_at=step))
        self.phase_start = step
        self.apply_trainability()

    # -- trainability -------------------------------------------------------------------------------
    def apply_trainability(self) -> None:
        """Set ``requires_grad`` from the specs; drop gradients of anything frozen."""
        flags: list[tuple[nn.Parameter, bool]] = [(self.rack.embed.weight, not self.embed_frozen)]
        for stack, spec in zip(self.rack.stacks, self.specs):
            flags += [(p, not spec.frozen) for p in stack.base_parameters()]
            flags += [(p, bool(self.lora.enabled)) for p in stack.adapter_parameters()]
        flags += [(p, True) for p in self.rack.head.parameters()]
        for p, trainable in flags:
            p.requires_grad_(trainable)
            if not trainable:
                p.grad = None

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Trainable parameters in a fixed order (embedding, stacks in order, head)."""
        return [(n, p) for n, p in self.rack.named_parameters() if p.requires_grad]

    def make_optimizer(self, lr: float, weight_decay: float, betas: tuple[float, ...]) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters; decay on matrices except the embedding."""
        decay, no_decay = [], []
        for name, p in self.trainable_parameters():
            (decay if p.ndim >= 2 and not name.startswith("embed.") else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=(float(betas[0]), float(betas[1])))

    def cacheable_prefix(self) -> int:
        """Number of leading stacks whose output is fixed (-1 when even the embedding trains)."""
        if not self.embed_frozen:
            return -1
        n = 0
        for stack, spec in zip(self.rack.stacks, self.specs):
            if not spec.frozen or (self.lora.enabled and stack.adapter_parameters()):
                break
            n += 1
        return n

    # -- state --------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """The JSON-able structure of the rack."""
        return {
            "format": META_FORMAT,
            "dims": asdict(self.dims),
            "embed_frozen": self.embed_frozen,
            "initial_stacks": self.initial_stacks,
            "phase_start": self.phase_start,
            "building_mode": "append",
            "stacks": [s.to_json() for s in self.specs],
        }

    def state_dict(self) -> dict[str, Any]:
        """``{"meta", "embed", "stacks": {"<i>": ...}, "head"}``."""
        return {
            "meta": self.meta(),
            "embed": self.rack.embed.state_dict(),
            "stacks": {str(i): s.state_dict() for i, s in enumerate(self.rack.stacks)},
            "head": self.rack.head.state_dict(),
        }

    def _check_meta(self, meta: Any) -> None:
        if not isinstance(meta, Mapping) or meta.get("format") != META_FORMAT:
            raise StackStateError(f"rack/meta is missing or not '{META_FORMAT}'; this state was not saved by the Stack-Wise task")
        saved = meta["dims"]
        for key in ("d_model", "n_heads", "d_ff"):
            if int(saved[key]) != getattr(self.dims, key):
                raise StackStateError(
                    f"the saved rack has {key}={saved[key]} but model.{key}={getattr(self.dims, key)}; "
                    f"set model.{key}={saved[key]} to restore it"
                )

    def build_structure(self, meta: Mapping[str, Any]) -> None:
        """The rack ``meta`` describes (stacks, dtypes, adapters, frozen flags) with placeholder weights: the shape a
        sharded restore loads into (its tensors arrive afterwards, through the modules' own ``load_state_dict``)."""
        self._check_meta(meta)
        self.rack = self._empty_rack()
        self.specs = [StackSpec(**dict(s)) for s in meta["stacks"]]
        for spec in self.specs:
            with torch.device("meta"):  # no init work: every tensor is loaded afterwards
                stack = Stack(self.dims, spec.n_blocks).to(dtype_from_name(spec.dtype))
                if spec.lora_rank:
                    attach_lora(stack, int(spec.lora_rank), float(spec.lora_alpha or 1.0), tuple(self.lora.targets), None)
            self.rack.stacks.append(stack.to_empty(device=self.device))
        self._load_flags(meta)

    def _load_flags(self, meta: Mapping[str, Any]) -> None:
        self.embed_frozen = bool(meta["embed_frozen"])
        self.initial_stacks, self.phase_start = int(meta["initial_stacks"]), int(meta["phase_start"])
        self.apply_trainability()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the saved structure from ``meta`` and load every tensor bit-exactly."""
        meta = state.get("meta")
        self._check_meta(meta)
        assert isinstance(meta, Mapping)
        self.rack = self._empty_rack()
        self.specs = [StackSpec(**dict(s)) for s in meta["stacks"]]
        stacks = state["stacks"]
        for i, spec in enumerate(self.specs):
            tensors = stacks.get(str(i), stacks.get(i)) if isinstance(stacks, Mapping) else stacks[i]
            if tensors is None:
                raise StackStateError(f"rack/meta lists {len(self.specs)} stacks but rack/stacks/{i} is missing")
            stack = stack_from_tensors(tensors, self.dims, self.device, f"saved stack {i}")
            if stack.dtype != dtype_from_name(spec.dtype):
                raise StackStateError(f"saved stack {i} holds {stack.dtype} tensors but rack/meta says {spec.dtype}")
            self.rack.stacks.append(stack)
        self.rack.embed.load_state_dict(dict(state["embed"]))
        self.rack.head.load_state_dict(dict(state["head"]))
        self._load_flags(meta)

    def load_into_structure(self, state: Mapping[str, Any]) -> None:
        """Load a saved rack into the structure already built for it (``build_structure``), module by module (the
        modules may be sharded: their tensors then are this rank's shards)."""
        if state.get("meta", {}).get("stacks") != self.meta()["stacks"]:
            raise StackStateError("the saved rack/meta does not describe the rack built for it; build_structure must come first")
        stacks = state["stacks"]
        for i, stack in enumerate(self.rack.stacks):
            stack.load_state_dict(dict(stacks[str(i)]))
        self.rack.embed.load_state_dict(dict(state["embed"]))
        self.rack.head.load_state_dict(dict(state["head"]))
