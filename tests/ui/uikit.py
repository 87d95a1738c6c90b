"""Runs written through the real checkpoint manager (no train.py): fast stores for the view-model tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from waypoint.checkpoint import CheckpointManager

CONFIG = {"name": "toy", "seed": 0, "model": {"_target_": "waypoint.tasks.toy.ToyTask", "width": 8}}


def make_run(
    run: Path,
    losses: tuple[float, ...] = (1.0, 0.5, 0.7),
    *,
    last_tags: tuple[str, ...] = ("end",),
    overrides: tuple[str, ...] = ("model=toy",),
    config: dict | None = None,
    frozen: bool = True,
    metric: str = "val/loss",
) -> Path:
    """A run dir: one checkpoint per loss (steps 10, 20, ...), metrics.jsonl, .hydra/overrides.yaml.

    ``body.*`` changes at every save; ``head.*`` is frozen (same content id) when ``frozen``. The losses are
    logged and monitored (mode min) as ``metric``.
    """
    torch.manual_seed(0)
    body, head = torch.randn(64, 64), torch.randn(256, 64)
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    rows = []
    with CheckpointManager(run / "checkpoints", monitor=metric, mode="min") as mgr:
        for n, loss in enumerate(losses, start=1):
            body = body * 1.1
            if not frozen:
                head = head + 0.01
            step = 10 * n
            tags = last_tags if n == len(losses) else ()
            state = {"task": {"body": {"weight": body}, "head": {"weight": head}}, "trainer": {"step": step}}
            mgr.save(state, step, epoch=n, metrics={metric: loss}, tags=tags, meta={"config": config or CONFIG})
            rows += [
                {"step": step - 5, "time": 1000.0 + step, "train/loss": loss + 0.1},
                {"step": step, "time": 1001.0 + step, metric: loss},
            ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run
