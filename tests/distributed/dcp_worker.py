"""One rank of a sharded save or restore through the store (started by torchrun from test_dcp.py, or alone).

dcp_worker.py save ROOT OUT    train a small FSDP2 model 3 steps, save it sharded, write its full tensors to OUT
dcp_worker.py load ROOT OUT    restore the newest checkpoint into a fresh FSDP2 model at this world size,
                               write the full tensors each rank sees to OUT.rank<N>.safetensors
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from waypoint.checkpoint import CheckpointManager


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 30), torch.nn.ReLU(), torch.nn.Linear(30, 6))
    if dist.is_initialized():
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def full(state: dict) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state["model"].items():
        out[f"model.{k}"] = v.full_tensor() if hasattr(v, "full_tensor") else v
    for i, s in state["optim"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            v = s[name]
            out[f"optim.{i}.{name}"] = v.full_tensor() if hasattr(v, "full_tensor") else v
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def main() -> None:
    mode, root, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    model, opt = build()
    if mode == "fail" and rank == 1:  # this rank's writes fail as on a full disk
        import errno

        import waypoint.checkpoint.dcp as dcp_module

        def full_disk(*args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        dcp_module.write_pack = full_disk  # type: ignore[assignment]
    if mode in ("save", "fail"):
        g = torch.Generator().manual_seed(100 + rank)
        for _ in range(3):
            loss = model(torch.randn(8, 12, generator=g)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        state = {"model": model.state_dict(), "optim": opt.state_dict(), "step": 3, "note": "sharded"}
        manager = CheckpointManager(root) if rank == 0 else None
        if dist.is_initialized():
            dist.barrier()  # rank 0 holds the writer's lease: the others look at the store read-only
        manager = manager or CheckpointManager(root, read_only=True)
        try:
            info = manager.save_sharded(state, step=3, tags=("milestone",), meta={"world_size": 2})
        except Exception as exc:  # every rank hears of a rank that could not write
            print(json.dumps({"rank": rank, "failed": type(exc).__name__, "message": str(exc)[:2000]}), flush=True)
            manager.close()
            raise SystemExit(1) from None
        tensors = full(state)
        manager.close()
        if rank == 0:
            save_file(tensors, str(out))
            print(json.dumps({"saved": info.name}))
    else:
        from torch.distributed.checkpoint.state_dict import _init_optim_state

        _init_optim_state(opt)
        template = {"model": model.state_dict(), "optim": opt.state_dict(), "step": 0, "note": ""}
        with CheckpointManager(root, read_only=True) as reader:
            state, _info = reader.restore_sharded(template, "latest")
        assert state["step"] == 3 and state["note"] == "sharded", state
        opt.load_state_dict(state["optim"])
        save_file(full({"model": model.state_dict(), "optim": opt.state_dict()}), f"{out}.rank{rank}.safetensors")
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
