"""Lock-free readers (`verify`, `ls`, `du`) while a writer saves, applies retention, repacks and collects
packs: a checkpoint or pack deleted meanwhile is not damage, and real damage is still reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from waypoint.checkpoint import CheckpointManager
from waypoint.cli import main

WRITER = """
import sys, time
import torch
from waypoint.checkpoint import CheckpointManager, KeepLast, RetentionPolicy
g = torch.Generator().manual_seed(0)
frozen = torch.randn(64, 64, generator=g)
with CheckpointManager(sys.argv[1], RetentionPolicy((KeepLast(2),))) as mgr:
    step, end = 1, time.monotonic() + float(sys.argv[2])
    slow = torch.randn(128, 64, generator=g)
    while time.monotonic() < end:
        if step % 3 == 0:  # packs holding a dead fast tensor and a live slow one become sparse: repacked
            slow = torch.randn(128, 64, generator=g)
        mgr.save({"frozen": frozen, "slow": slow, "fast": torch.randn(256, 64, generator=g), "step": step}, step=step)
        step += 1
    print(step, flush=True)
"""


def test_verify_ls_and_du_report_no_damage_while_a_writer_deletes_checkpoints_and_packs(tmp_path):
    root = tmp_path / "ck"
    with CheckpointManager(root) as mgr:
        mgr.save({"seed": torch.zeros(1)}, step=0)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    false_reports, rounds, checked = [], 0, 0
    try:
        while writer.poll() is None:
            with CheckpointManager(root, read_only=True) as reader:
                listed = reader.list()
                false_reports += [(i.name, i.problem) for i in listed if not i.valid]
                report = reader.verify()
                checked += len(report)
                false_reports += [(n, p) for n, p in report.items() if p]
            rounds += 1
    finally:
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    saves = int(out)
    assert saves > 10 and rounds > 5, (saves, rounds)
    assert checked > rounds
    assert false_reports == []
    assert main(["verify", str(root)]) == 0
    assert main(["du", str(root)]) == 0


def test_ls_marks_a_checkpoint_whose_pack_is_gone_invalid_and_verify_still_reports_it(tmp_path, capsys):
    root = tmp_path / "ck"
    with CheckpointManager(root) as mgr:
        mgr.save({"a": torch.ones(8)}, step=1)
        mgr.save({"b": torch.zeros(8)}, step=2)
    pack = next(iter(json.loads((root / "step_000000002" / "manifest.json").read_text())["packs"]))
    os.unlink(root / "packs" / pack)
    assert main(["ls", str(root), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["step_000000001"]["valid"] and "latest" in rows["step_000000001"]["tags"]
    assert not rows["step_000000002"]["valid"] and f"pack {pack} is missing" in rows["step_000000002"]["problem"]
    assert main(["verify", str(root)]) == 1
    assert "DAMAGED  step_000000002" in capsys.readouterr().out
