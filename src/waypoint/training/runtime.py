"""Where this process stands among its peers: rank, world size, device, and the few collectives the loop needs.

The only module that reads launcher variables (torchrun's, or Slurm's when ``srun`` starts the processes). A
world of one is the same code with no process group: every collective is then a local no-op. Collectives are
few and small (one agreement per step boundary) and run under ``hardware.timeout_s``: a rank that died or
stalled becomes a ``DistributedError``, never a hang.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from waypoint.errors import FailureError, UserError

log = logging.getLogger(__name__)

#: the strategies of ``hardware.strategy``: one process, data-parallel replicas, fully sharded (FSDP2)
STRATEGIES = ("single", "ddp", "fsdp")
#: methods other than ``forward`` that tasks call on sharded modules (timm's ``forward_features`` for DINO's kNN)
FORWARD_METHODS = ("forward_features",)


class DistributedError(FailureError, RuntimeError):
    """A collective failed or timed out: another rank died, raised, or stalled."""


class LaunchError(UserError, ValueError):
    """The launcher environment does not fit the configuration (e.g. ``hardware=ddp`` without torchrun)."""


@dataclass(frozen=True)
class LaunchEnv:
    """What the launcher said about this process (from the environment, read once)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: str | None = None
    launcher: str = "none"  # torchrun | slurm | none

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LaunchEnv:
        """torchrun's variables win; Slurm's are used when ``srun`` started the processes directly."""
        env = os.environ if env is None else env
        if "RANK" in env and "WORLD_SIZE" in env:
            return cls(
                rank=int(env["RANK"]),
                world_size=int(env["WORLD_SIZE"]),
                local_rank=int(env.get("LOCAL_RANK", "0")),
                master_addr=env.get("MASTER_ADDR"),
                master_port=env.get("MASTER_PORT"),
                launcher="torchrun",
            )
        if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
            job = int(env.get("SLURM_JOB_ID", "0") or 0)
            return cls(
                rank=int(env["SLURM_PROCID"]),
                world_size=int(env["SLURM_NTASKS"]),
                local_rank=int(env.get("SLURM_LOCALID", "0")),
                master_addr=env.get("MASTER_ADDR") or env.get("SLURM_LAUNCH_NODE_IPADDR") or "127.0.0.1",
                master_port=env.get("MASTER_PORT") or str(20000 + job % 20000),
                launcher="slurm",
            )
        return cls()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s global RNG streams: the run seed itself on rank 0 (so one process is unchanged)."""
    if rank == 0:
        return int(seed)
    digest = hashlib.blake2b(repr(("rank", int(seed), int(rank))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass
class Runtime:
    """This process among its peers. ``Runtime()`` is a single process with no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    strategy: str = "single"
    timeout_s: float = 300.0
    _group: bool = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def start(
        cls,
        strategy: str,
        device: torch.device,
        timeout_s: float = 300.0,
        backend: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Runtime:
        """Join the process group the launcher set up (none for ``strategy=single`` or a world of one)."""
        if strategy not in STRATEGIES:
            raise LaunchError(f"hardware.strategy must be one of {', '.join(STRATEGIES)}, got '{strategy}'")
        launch = LaunchEnv.from_env(env)
        if strategy == "single":
            if launch.world_size > 1:
                raise LaunchError(
                    f"this process is rank {launch.rank} of {launch.world_size} ({launch.launcher}) but the hardware "
                    "config is single-process; pass hardware=ddp or hardware=fsdp"
                )
            return cls(device=device, strategy=strategy, timeout_s=timeout_s)
        if launch.launcher == "none":
            raise LaunchError(
                f"hardware={strategy} needs torchrun's environment (RANK, WORLD_SIZE); launch it as "
                f"`torchrun --nproc_per_node=N train.py ... hardware={strategy}`"
            )
        if device.type == "cuda":
            device = torch.device("cuda", launch.local_rank % max(1, torch.cuda.device_count()))
            torch.cuda.set_device(device)
        rt = cls(launch.rank, launch.world_size, launch.local_rank, device, strategy, timeout_s)
        if launch.world_size > 1:
            import torch.distributed as dist

            if launch.master_addr:
                os.environ.setdefault("MASTER_ADDR", launch.master_addr)
            if launch.master_port:
                os.environ.setdefault("MASTER_PORT", str(launch.master_port))
            os.environ.setdefault("RANK", str(launch.rank))
            os.environ.setdefault("WORLD_SIZE", str(launch.world_size))
            chosen = backend or ("nccl" if device.type == "cuda" else "gloo")
            dist.init_process_group(
                chosen,
                rank=launch.rank,
                world_size=launch.world_size,
                timeout=datetime.timedelta(seconds=timeout_s),
                **({"device_id": device} if device.type == "cuda" else {}),
            )
            rt._group = True
            log.debug("rank %d of %d joined a %s process group (%s)", rt.rank, rt.world_size, chosen, launch.launcher)
        return rt

    def close(self) -> None:
        """Leave the process group (idempotent)."""
        if self._group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._group = False

    # ------------------------------------------------------------------ facts
    @property
    def distributed(self) -> bool:
        """True when there is a process group (more than one process)."""
        return self._group

    @property
    def is_coordinator(self) -> bool:
        """Rank 0 alone logs, holds the writer lock and commits checkpoints."""
        return self.rank == 0

    @property
    def shards_parameters(self) -> bool:
        """True for FSDP: every rank holds a part of each parameter, so forward passes are collective."""
        return self.strategy == "fsdp" and self.world_size > 1

    def describe(self) -> dict[str, Any]:
        """What a manifest records about the world that saved it."""
        return {"world_size": self.world_size, "strategy": self.strategy}

    # ------------------------------------------------------------------ collectives
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # gloo/NCCL raise RuntimeError subclasses with long, low-level text
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: {what} failed ({first}); another rank died, raised an error "
                f"or stalled longer than hardware.timeout_s={self.timeout_s:g}s, see its output"
            ) from exc

    def barrier(self) -> None:
        if self._group:
            import torch.distributed as dist

            if self.device.type == "cuda":
                self._call("a barrier", dist.barrier, device_ids=[self.device.index])
            else:
                self._call("a barrier", dist.barrier)

    def _all_reduce(self, values: Sequence[float], what: str, op: str = "sum") -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        self._call(what, dist.all_reduce, t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def any(self, flag: bool, what: str = "agreeing on a stop") -> bool:
        """True when ``flag`` is true on any rank (every rank gets the same answer)."""
        if not self._group:
            return bool(flag)
        return self._all_reduce([1.0 if flag else 0.0], what, "max")[0] > 0

    def all_sum(self, values: Sequence[float], what: str = "summing over ranks") -> list[float]:
        """Element-wise sums over ranks (float64)."""
        if not self._group:
            return [float(v) for v in values]
        return self._all_reduce(values, what)

    def mean_(self, tensor: torch.Tensor, what: str = "averaging a tensor over ranks") -> torch.Tensor:
        """Average ``tensor`` over ranks in place (e.g. DINO's centre: the mean teacher output of the global batch)."""
        if self._group:
            import torch.distributed as dist

            self._call(what, dist.all_reduce, tensor, op=dist.ReduceOp.SUM)
            tensor.div_(self.world_size)
        return tensor

    def gather_object(self, obj: Any, what: str = "gathering state") -> list[Any] | None:
        """Every rank's ``obj`` on the coordinator (in rank order), None elsewhere. In memory, never from a file."""
        if not self._group:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_coordinator else None
        self._call(what, dist.gather_object, obj, out, dst=0)
        return out

    def all_gather_object(self, obj: Any, what: str = "gathering state") -> list[Any]:
        """Every rank's ``obj`` on every rank (in rank order). In memory, never from a file."""
        if not self._group:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        self._call(what, dist.all_gather_object, out, obj)
        return out

    def broadcast_object(self, obj: Any, what: str = "sharing a decision") -> Any:
        """The coordinator's ``obj`` on every rank."""
        if not self._group:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_coordinator else None]
        self._call(what, dist.broadcast_object_list, box, src=0)
        return box[0]

    # ------------------------------------------------------------------ modules
    @staticmethod
    def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
        """Create an optimizer's (empty) state now, shaped and sharded like its parameters, so a sharded restore
        has tensors to load into; parameters are unchanged (a step with zero gradients and zero learning rate)."""
        from torch.distributed.checkpoint.state_dict import _init_optim_state

        _init_optim_state(optimizer)

    def wrap(self, module: torch.nn.Module, *, find_unused: bool = True, methods: Sequence[str] = ()) -> torch.nn.Module:
        """The module to run training forwards through: itself (one process), a ``DistributedDataParallel`` around
        it (``ddp``), or itself sharded in place by FSDP2 ``fully_shard``, children first (``fsdp``); ``methods`` are
        entry points of the root besides ``forward``. Wrapping a sharded root again shards the children added since
        (a model that grows) and settles the root over all of them."""
        if not self._group:
            return module
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # buffers are synchronised from rank 0 at every forward (DDP's default)
            return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)
        from torch.distributed.fsdp import FSDPModule

        grown = isinstance(module, FSDPModule)
        _shard_children(module)
        if not grown:
            _shard(module, methods)
        _settle_root(module, again=grown)
        return module


def _shard(unit: torch.nn.Module, methods: Sequence[str] = ()) -> None:
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    fully_shard(unit)
    for method in (*FORWARD_METHODS, *methods):  # entry points besides forward() gather the parameters too
        if callable(getattr(unit, method, None)):
            register_fsdp_forward_method(unit, method)


def _shard_children(parent: torch.nn.Module) -> None:
    """Shard every part below ``parent`` whose parameters no unit holds yet: a child with parameters becomes a unit,
    a container's members do (fully_shard needs a forward), and inside a sharded unit only the parts added since
    (e.g. adapters given to a frozen layer) do."""
    from torch.distributed.tensor import DTensor

    for child in parent.children():
        params = list(child.parameters())
        new = [p for p in params if not isinstance(p, DTensor)]
        if not new:
            continue
        if len(new) < len(params) or isinstance(child, (torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.Sequential)):
            _shard_children(child)
        else:
            _shard(child)


def _settle_root(root: torch.nn.Module, again: bool) -> None:
    """Make ``root`` the root of every sharded unit below it now: a first call into a child (e.g. ``forward_features``
    during validation at step 0) would otherwise make that child a root of its own. ``again``: the root was settled
    before and units were added since, so its settled view of the tree is dropped and rebuilt."""
    state = root._get_fsdp_state()  # type: ignore[operator]
    if again:
        from torch.distributed.fsdp._fully_shard._fsdp_state import FSDPStateContext

        for unit in state._state_ctx.all_states:
            unit._is_root = None
        state._state_ctx = FSDPStateContext()
    state._lazy_init()
