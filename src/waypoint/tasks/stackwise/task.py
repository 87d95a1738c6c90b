"""Stack-Wise: a byte-level causal LM built as a rack of stacks that grows during training (append mode).

At each append step ``after_optimizer_step`` freezes the existing stacks (optionally giving them LoRA adapters),
appends a fresh stack and builds a new optimizer over the newest stack, the adapters and the head: **the trainer
must re-read ``optimizers()`` after every step**. Frozen base weights are never cast, merged or rewritten, so the
store keeps them once. Initialisation depends on ``(seed, stack index)`` and the LR on the step, so a resume is
bit-identical, also right after an append. Validation: ``val/bpb``. State layout: ``waypoint.tasks.stackwise.rack``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from waypoint.config import ConfigError
from waypoint.data.text import TextConfig
from waypoint.tasks.base import StepContext
from waypoint.tasks.common import check_options, preset_sizes, stack_dicts, warmup_cosine
from waypoint.tasks.stackwise.build import RackBuilder
from waypoint.tasks.stackwise.cache import ActivationCache
from waypoint.tasks.stackwise.model import LINEAR_NAMES, VOCAB, Dims, Rack
from waypoint.tasks.stackwise.rack import (
    PRECISIONS,
    StackSpec,
    StackStateError,
    dtype_name,
    extract_stack,
    parse_init_stacks,
    precision_dtype,
)

PRESETS: dict[str, dict[str, Any]] = {
    "default": {"d_model": 128, "n_heads": 4, "d_ff": 384, "blocks_per_stack": 2, "seq_len": 128, "target_stacks": 3},
    "smoke": {"d_model": 32, "n_heads": 2, "d_ff": 64, "blocks_per_stack": 1, "seq_len": 32, "target_stacks": 2},
    # mlsquare/stack-wise's ModelConfig and ProgressiveConfig defaults (d_model 4096, 32 heads, SwiGLU 14336,
    # 4 blocks per stack, 8 target stacks, 512-token windows): a starting point on a GPU, not for a CPU
    "paper": {"d_model": 4096, "n_heads": 32, "d_ff": 14336, "blocks_per_stack": 4, "seq_len": 512, "target_stacks": 8},
}

#: how the rack is trained: grown stack by stack, or the final rack trained whole from step 0 (the baseline)
STRATEGIES = ("progressive", "end_to_end")

__all__ = ["StackWiseTask", "StackWiseConfig", "LoRAConfig", "extract_stack", "CONFIG_SCHEMAS"]


@dataclass
class LoRAConfig:
    """Adapters given to frozen stacks when a stack is appended."""

    enabled: bool = False
    rank: int = 4
    alpha: float = 8.0
    targets: list[str] = field(default_factory=lambda: list(LINEAR_NAMES))


@dataclass
class StackWiseConfig:
    """Hydra schema of ``model=stackwise``; size fields left None come from ``scale``."""

    _target_: str = "waypoint.tasks.stackwise.StackWiseTask"
    scale: str = "default"
    d_model: Optional[int] = None
    n_heads: Optional[int] = None
    d_ff: Optional[int] = None
    blocks_per_stack: Optional[int] = None
    seq_len: Optional[int] = None
    target_stacks: Optional[int] = None
    building_mode: str = "append"
    strategy: str = "progressive"  # progressive | end_to_end (all target_stacks trainable from step 0)
    append_at: Optional[list[int]] = None  # steps completed at each append; None = evenly over the run
    precision: str = "full"  # precision of new stacks: full (fp32) | half (bf16 on CPU, fp16 on GPU)
    stack_precisions: Optional[list[str]] = None  # per stack index, overrides `precision`
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    cache_activations: bool = False
    cache_max_items: Optional[int] = 1024
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    init_stacks_from: Optional[str] = None  # resolved by the trainer into the `init_stacks` argument
    init_stacks_indices: Optional[list[int]] = None  # which of its stacks, in this order (null: all of them)
    init_stacks_frozen: bool = True


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) or OmegaConf.is_list(value) else value


class _RackStep(torch.nn.Module):
    """The training forward pass as a module over the rack's parameters (what DDP wraps)."""

    def __init__(self, rack: torch.nn.Module, forward: Any) -> None:
        super().__init__()
        self.rack = rack
        self._forward = forward

    def forward(self, batch: Any, x: torch.Tensor) -> torch.Tensor:
        return self._forward(batch, x)


class StackWiseTask:
    """The Stack-Wise family behind the Task contract (``waypoint.tasks.base.Task``)."""

    monitor = "val/bpb"
    monitor_mode = "min"
    #: entry points of the rack besides forward (a sharded rack gathers its parameters for these too)
    rack_methods = ("forward_from", "prefix")

    def __init__(self, data: Any, seed: int = 0, init_stacks: Optional[Mapping[str, Any]] = None, **config: Any) -> None:
        check_options(StackWiseConfig, config, "stackwise")
        config = {k: _plain(v) for k, v in config.items()}
        if isinstance(config.get("lora"), Mapping):
            config["lora"] = LoRAConfig(**config["lora"])
        self.cfg = StackWiseConfig(**config)
        bad = [p for p in [self.cfg.precision, *(self.cfg.stack_precisions or [])] if p not in PRECISIONS]
        if bad:
            raise ValueError(f"model.precision and model.stack_precisions must be one of {list(PRECISIONS)}, got {bad}")
        if self.cfg.building_mode != "append":
            raise ValueError(f"model.building_mode '{self.cfg.building_mode}' is not supported; use 'append'")
        if self.cfg.strategy not in STRATEGIES:
            raise ValueError(f"model.strategy must be one of {list(STRATEGIES)}, got '{self.cfg.strategy}'")
        if self.cfg.strategy == "end_to_end" and self.cfg.init_stacks_from:
            raise ValueError(
                "model.strategy=end_to_end trains the whole rack from scratch; it cannot take model.init_stacks_from"
            )
        size = preset_sizes(PRESETS, self.cfg.scale, vars(self.cfg))
        self.dims = Dims(int(size["d_model"]), int(size["n_heads"]), int(size["d_ff"]), int(size["seq_len"]))
        self.blocks_per_stack, self.target_stacks = int(size["blocks_per_stack"]), int(size["target_stacks"])
        if self.cfg.init_stacks_from and init_stacks is None:
            raise ValueError(
                "model.init_stacks_from is set but no init_stacks were given; "
                "the trainer resolves it through the checkpoint store."
            )
        if self.cfg.init_stacks_indices is not None and init_stacks is None:
            raise ValueError("model.init_stacks_indices picks stacks of model.init_stacks_from, which is not set")
        self.init = parse_init_stacks(init_stacks, self.cfg.init_stacks_indices) if init_stacks is not None else None
        if getattr(data, "kind", None) != "text":
            raise ValueError(f"model=stackwise needs text data (data=text), got {type(data).__name__}")
        self.data, self.seed = data, int(seed)
        self.builder: Optional[RackBuilder] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.cache = ActivationCache(self.cfg.cache_max_items) if self.cfg.cache_activations else None
        self.runtime: Any = None
        self.train_step_module: Any = None
        self.total_steps, self.device = 1, torch.device("cpu")
        self._unigram_bpb: Optional[float] = None

    # -- data ---------------------------------------------------------------------------------------
    def train_dataset(self) -> torch.utils.data.Dataset:
        """Fixed byte windows; ``__getitem__`` takes ``(epoch, index)``."""
        return self.data.train_dataset(self.dims.seq_len)

    def val_dataset(self) -> torch.utils.data.Dataset | None:
        """Held-out byte windows."""
        return self.data.val_dataset(self.dims.seq_len)

    collate = staticmethod(stack_dicts)  # windows and their dataset indices

    # -- structure ----------------------------------------------------------------------------------
    def _builder(self) -> RackBuilder:
        if self.builder is None:
            raise RuntimeError("StackWiseTask.setup() must run before training or restoring")
        return self.builder

    @property
    def rack(self) -> Rack:
        return self._builder().rack

    @property
    def specs(self) -> list[StackSpec]:
        """Per-stack specs, in rack order."""
        return self._builder().specs

    def stack_precision(self, index: int) -> str:
        """Configured precision of stack ``index``."""
        per = self.cfg.stack_precisions or []
        return str(per[index]) if index < len(per) else self.cfg.precision

    def append_steps(self) -> list[int]:
        """Steps completed at which the rack grows (one per stack beyond the initial ones)."""
        initial = self._builder().initial_stacks
        remaining = max(0, self.target_stacks - initial)
        if self.cfg.append_at is not None:
            return [int(s) for s in self.cfg.append_at][:remaining]
        return [round(self.total_steps * j / (remaining + 1)) for j in range(1, remaining + 1)]

    def setup(self, total_steps: int, steps_per_epoch: int, device: torch.device, runtime: Any = None) -> None:
        """Build the first stack(s) (fresh, or ``init_stacks``), the head and the optimizer; under torchrun the
        rack trains through ``runtime.wrap``, again whenever it grows (``hardware=fsdp``: each part is sharded as it
        joins the rack, which is the root; ``hardware=ddp``: the training step is wrapped anew)."""
        self.total_steps, self.device = max(1, int(total_steps)), torch.device(device)
        self.runtime = runtime
        self._refuse_unshardable()
        builder = RackBuilder(self.dims, self.seed, self.device, self.cfg.lora)
        if self.init is None:  # end to end: the final rack at once
            count = self.target_stacks if self.cfg.strategy == "end_to_end" else 1
            builder.start_fresh(
                self.blocks_per_stack, [precision_dtype(self.stack_precision(i), self.device) for i in range(count)]
            )
        else:
            builder.start_from(self.init, frozen=self.cfg.init_stacks_frozen)
            if self.cfg.init_stacks_frozen:
                n = len(builder.specs)
                builder.append(self.blocks_per_stack, precision_dtype(self.stack_precision(n), self.device), step=0)
            builder.initial_stacks = len(builder.specs)
        self.builder = builder
        self._after_structure_change()

    @property
    def sharded(self) -> bool:
        """Whether the rack is sharded over the ranks (``hardware=fsdp`` with more than one process)."""
        return bool(self.runtime is not None and self.runtime.shards_parameters)

    def _refuse_unshardable(self) -> None:
        if self.sharded and self.cache is not None:  # each rank would cache (and save) the items of its own batches
            raise ConfigError(
                "hardware=fsdp does not shard Stack-Wise with model.cache_activations=true; turn it off or use hardware=ddp"
            )

    def _after_structure_change(self) -> None:
        if self.sharded:  # every part is sharded as it joins (the rack is the root); the optimizer takes the shards
            self.runtime.wrap(self.rack, methods=self.rack_methods)
            self.train_step_module = self._logits
        else:
            step = _RackStep(self.rack, self._logits)
            # frozen stacks have no gradients; the embedding is unused once a frozen prefix feeds the trainable stack
            self.train_step_module = self.runtime.wrap(step, find_unused=True) if self.runtime is not None else step
        self.optimizer = self._builder().make_optimizer(self.cfg.lr, self.cfg.weight_decay, tuple(self.cfg.betas))
        if self.cache is not None:
            self.cache.reset(self._builder().cacheable_prefix())

    def append_stack(self, step: int) -> None:
        """Freeze the rack so far, add a fresh stack and rebuild the optimizer."""
        n = len(self.specs)
        self._builder().append(self.blocks_per_stack, precision_dtype(self.stack_precision(n), self.device), step=step)
        self._after_structure_change()

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The current optimizer; it is replaced when a stack is appended, so re-read this after every step."""
        if self.optimizer is None:
            raise RuntimeError("StackWiseTask.setup() must run before training or restoring")
        return [self.optimizer]

    # -- steps --------------------------------------------------------------------------------------
    def _logits(self, batch: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits of the whole rack; the frozen prefix (the embedding and the leading frozen stacks) runs without
        gradients, from the activation cache when it is on. Only entry points of the rack itself are called."""
        prefix = self._builder().cacheable_prefix()
        if prefix < 0:
            return self.rack(x)
        with torch.no_grad():
            if self.cache is None:
                h = self.rack.prefix(x, prefix)
            else:
                h = self.cache.lookup(batch["index"], lambda rows: self.rack.prefix(x[rows.to(x.device)], prefix))
        return self.rack.forward_from(h, prefix)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().reshape(-1, VOCAB), y.reshape(-1))

    def training_step(self, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-byte cross-entropy through the whole rack (frozen prefix without gradients)."""
        self.rack.train()
        tokens = batch["tokens"].to(self.device, non_blocking=True)
        x, y = tokens[:, :-1], tokens[:, 1:]
        loss = self._loss(self.train_step_module(batch, x), y)
        value = float(loss.detach())
        logs = {"train/loss": value, "train/bpb": value / math.log(2), "train/stacks": float(len(self.specs))}
        if self.cache is not None:
            logs["train/cache_items"] = float(len(self.cache.items))
        return loss, logs

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Set the learning rate: warmup + cosine within the current stack's phase."""
        builder = self._builder()
        start = builder.phase_start
        later = [s for s in self.append_steps() if s > start]
        end = min(later) if later else max(ctx.total_steps or self.total_steps, start + 1)
        factor = warmup_cosine(ctx.step - start, max(1, end - start), self.cfg.warmup_steps, self.cfg.min_lr_ratio)
        for group in self.optimizers()[0].param_groups:
            group["lr"] = self.cfg.lr * factor

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Append a stack when the schedule says so (this replaces the optimizer)."""
        done = ctx.step + 1
        grown = len(self.specs) - self._builder().initial_stacks
        schedule = self.append_steps()
        if len(self.specs) < self.target_stacks and grown < len(schedule) and done >= schedule[grown]:
            self.append_stack(done)

    @torch.no_grad()
    def validate(self, batches: Any, ctx: StepContext) -> dict[str, float]:
        """Bits per byte of the full rack on held-out windows, beside ``val/baseline_unigram_bpb`` (a byte
        unigram model fitted on the training split, scored on the same held-out text)."""
        rack = self.rack
        was_training = rack.training
        rack.eval()
        total, count = 0.0, 0
        for batch in batches:
            tokens = batch["tokens"].to(self.device)
            logits = rack(tokens[:, :-1])
            y = tokens[:, 1:]
            total += float(F.cross_entropy(logits.float().reshape(-1, VOCAB), y.reshape(-1), reduction="sum"))
            count += y.numel()
        rack.train(was_training)
        if not count:
            raise ValueError("validation received no batches; check data.val_items and data.max_items")
        nats = total / count
        if self._unigram_bpb is None:  # a function of the data only: computed once
            self._unigram_bpb = float(self.data.unigram_val_bpb())
        return {
            "val/bpb": nats / math.log(2),
            "val/loss": nats,
            "val/stacks": float(len(self.specs)),
            "val/baseline_unigram_bpb": self._unigram_bpb,
        }

    # -- state --------------------------------------------------------------------------------------
    def init_targets(self) -> dict[str, torch.Tensor]:
        """The live rack tensors a start from weights may overwrite: ``rack.embed.*``, ``rack.stacks.<i>.*``, ``rack.head.*``."""
        rack = self._builder().rack
        out = {f"rack.embed.{k}": v for k, v in rack.embed.state_dict().items()}
        for i, stack in enumerate(rack.stacks):
            out.update({f"rack.stacks.{i}.{k}": v for k, v in stack.state_dict().items()})
        out.update({f"rack.head.{k}": v for k, v in rack.head.state_dict().items()})
        return out

    def state_dict(self, optimizer: bool = True) -> dict[str, Any]:
        """``rack/{meta,embed,stacks/<i>,head}``, ``optimizer`` (unless ``optimizer=False``), and ``cache`` when on."""
        builder = self._builder()
        state: dict[str, Any] = {"rack": builder.state_dict()}
        if optimizer:
            state["optimizer"] = self.optimizers()[0].state_dict()
        if self.cache is not None:
            state["cache"] = self.cache.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the rack saved in ``state`` (stacks, precisions, adapters, frozen flags), then load it all."""
        if "rack" not in state:
            raise StackStateError("this is not a Stack-Wise state: it lacks 'rack'")
        if self.sharded:  # the structure was built by prepare_restore; the tensors are this rank's shards
            self._builder().load_into_structure(state["rack"])
        else:
            builder = RackBuilder(self.dims, self.seed, self.device, self.cfg.lora)
            builder.load_state_dict(state["rack"])
            self.builder = builder
            self._after_structure_change()
        if "optimizer" in state:  # a weights-only state keeps the optimizer _after_structure_change built
            self.optimizers()[0].load_state_dict(state["optimizer"])
        if self.cache is not None and "cache" in state:
            self.cache.load_state_dict(state["cache"], self.device)

    def prepare_restore(self, tree: Mapping[str, Any]) -> None:
        """Before a sharded restore: build (and shard) the rack a saved state describes, with placeholder weights, so
        that ``state_dict()`` has a place for each of its tensors. ``tree``: the task's saved JSON state."""
        rack = tree.get("rack") if isinstance(tree, Mapping) else None
        if not isinstance(rack, Mapping):
            raise StackStateError("this is not a Stack-Wise state: it lacks 'rack'")
        builder = RackBuilder(self.dims, self.seed, self.device, self.cfg.lora)
        builder.build_structure(rack.get("meta"))
        self.builder = builder
        self._after_structure_change()

    def parameter_groups(self) -> dict[str, list[str]]:
        """``embed``, ``stack_<i>`` (base weights), ``lora_<i>`` (adapters, when present), ``head``."""
        groups: dict[str, list[str]] = {"embed": [f"rack/embed/{k}" for k in self.rack.embed.state_dict()]}
        for i, stack in enumerate(self.rack.stacks):
            keys = list(stack.state_dict())
            groups[f"stack_{i}"] = [f"rack/stacks/{i}/{k}" for k in keys if ".lora." not in k]
            adapters = [f"rack/stacks/{i}/{k}" for k in keys if ".lora." in k]
            if adapters:
                groups[f"lora_{i}"] = adapters
        groups["head"] = [f"rack/head/{k}" for k in self.rack.head.state_dict()]
        return groups

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary of the rack (stacks, precisions, adapters, frozen flags, parameter counts)."""
        return {
            "stacks": [s.to_json() for s in self.specs],
            "dtype_of_new": dtype_name(precision_dtype(self.cfg.precision, self.device)),
            "trainable_params": sum(p.numel() for p in self.rack.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in self.rack.parameters()),
        }


CONFIG_SCHEMAS: dict[str, type] = {
    "model/stackwise_schema": StackWiseConfig,
    "data/text_schema": TextConfig,
}
