"""Every `waypoint` command on real smoke runs of each model family."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trainkit import committed, run_train, waypoint

FAMILIES = {"dino": "task/teacher/", "universeg": "task/model/", "stackwise": "task/rack/stacks/0/"}


class Runs(dict):
    """One finished smoke run per family (3 epochs, a checkpoint kept at every epoch), made on first use."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self.factory = factory

    def __missing__(self, family: str) -> Path:
        run_dir = self.factory.mktemp(family) / "run"
        run_train(run_dir, f"model={family}", "trainer.max_epochs=3", "checkpoint=all")
        self[family] = run_dir
        return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The runs, shared by the tests of this module."""
    return Runs(tmp_path_factory)


def ok(*args: str) -> str:
    proc = waypoint(*args)
    assert proc.returncode == 0, f"waypoint {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def test_show_gives_the_stack_wise_rack_and_each_tensor_with_what_changed(runs: Runs) -> None:
    shown = json.loads(ok("show", f"{runs['stackwise']}@latest", "--tensors", "--json"))
    assert [(s["frozen"], s["precision"]) for s in shown["rack"]] == [(True, "full"), (False, "full")]  # grown to 2
    table = {t["name"]: t for t in shown["tensor_table"]}
    assert len(table) == shown["tensors"] and all(t["bytes"] > 0 and t["dtype"] for t in table.values())
    frozen = [t["changed"] for k, t in table.items() if k.startswith("task/rack/stacks/0/")]
    trained = [t["changed"] for k, t in table.items() if k.startswith("task/rack/stacks/1/") and "weight" in k]
    assert frozen and set(frozen) == {"same"} and trained and set(trained) == {"changed"}
    text = ok("show", f"{runs['stackwise']}@latest")
    assert "stack 0   1 blocks, full (float32), frozen" in text and "stack 1" in text


# Stack-Wise (the fastest run) in make test; DINO and UniverSeg in make test-all
@pytest.fixture(params=[f if f == "stackwise" else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES])
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def test_ls_show_verify_and_du_describe_the_run(runs: Runs, family: str) -> None:
    run = runs[family]
    rows = json.loads(ok("ls", str(run), "--json"))
    assert [r["step"] for r in rows] == [8, 16, 24]
    last = rows[-1]
    assert {"latest", "end"} <= set(last["tags"]) and any("best" in r["tags"] for r in rows)
    assert all(r["valid"] and len(r["digest"]) == 64 and r["logical_bytes"] > 0 for r in rows)
    shown = json.loads(ok("show", f"{run}@latest", "--json"))
    assert shown["name"] == last["name"] and shown["metrics"] == last["metrics"]
    assert json.loads(ok("verify", str(run), "--json"))["ok"] is True
    du = json.loads(ok("du", str(run), "--json"))
    assert du["checkpoints"] == 3 and du["physical_bytes"] > 0 and du["logical_bytes"] > 0


def test_diff_names_changed_tensors_and_json_state(runs: Runs, family: str) -> None:
    run = runs[family]
    first, last = committed(run)[0], committed(run)[-1]
    doc = json.loads(ok("diff", str(first), str(last), "--json"))
    assert doc["changed"] and not doc["same_state"]
    assert any(c["path"].startswith("progress/step") for c in doc["json_changes"])
    assert json.loads(ok("diff", str(last), str(last), "--json"))["same_state"] is True


def test_tag_pin_and_gc_keep_what_they_must(runs: Runs, family: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs[family], run)
    names = [p.name for p in committed(run)]
    ok("tag", f"{run}@{names[0]}", "paper", "--note", "figure 3")
    ok("pin", f"{run}@{names[1]}", "--note", "keep")
    ok("untag", f"{run}@{names[0]}", "paper")
    dry = json.loads(ok("gc", str(run), "--keep-last", "1", "--dry-run", "--json"))
    assert [p.name for p in committed(run)] == names, "--dry-run deleted something"
    ok("gc", str(run), "--keep-last", "1")
    left = {r["name"]: r["tags"] for r in json.loads(ok("ls", str(run), "--json"))}
    assert sorted(set(names) - set(left)) == sorted(dry["deleted"])
    assert names[1] in left and names[-1] in left and any("best" in t for t in left.values())
    assert json.loads(ok("verify", str(run), "--json"))["ok"] is True


def test_export_a_part_then_import_it_into_a_new_run(runs: Runs, family: str, tmp_path: Path) -> None:
    part = FAMILIES[family]
    out = tmp_path / "part.safetensors"
    ok("export", f"{runs[family]}@best", str(out), "--part", part)
    tensors = load_file(str(out))
    assert tensors and not any(k.startswith(part) for k in tensors)
    pt = tmp_path / "whole.pt"
    ok("export", f"{runs[family]}@latest", str(pt), "--format", "pt")
    assert isinstance(torch.load(pt, weights_only=True), dict)
    ok("import", str(pt), str(tmp_path / "imported"))
    rows = json.loads(ok("ls", str(tmp_path / "imported"), "--json"))
    assert len(rows) == 1 and "imported" in rows[0]["tags"]


def test_backup_is_incremental_and_the_copy_verifies(runs: Runs, family: str, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    first = json.loads(ok("backup", str(runs[family]), str(dest), "--json"))
    again = json.loads(ok("backup", str(runs[family]), str(dest), "--json"))
    assert first["packs_copied"] > 0 and again["packs_copied"] == 0
    assert json.loads(ok("verify", str(dest), "--json"))["ok"] is True
