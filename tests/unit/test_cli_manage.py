"""`waypoint show/diff/tag/untag/pin/gc/export/import/backup` on stores written through the API."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from waypoint.checkpoint import CheckpointManager, KeepLast, RetentionPolicy
from waypoint.checkpoint.policy import KeepEvolution, KeepMilestones
from waypoint.cli import main


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
    with CheckpointManager(tmp_path / "run" / "checkpoints", RetentionPolicy((KeepLast(10),)), monitor="acc") as mgr:
        for i, acc in enumerate((0.1, 0.9, 0.4, 0.5), start=1):
            with torch.no_grad():
                net[1].weight.mul_(1.1)
            mgr.save(
                {"task": {"teacher": {f"backbone.{k}": v for k, v in net.state_dict().items()}}, "trainer": {"step": 10 * i}},
                10 * i,
                epoch=i,
                metrics={"acc": acc},
            )
    return tmp_path / "run"


def run_json(capsys, *argv):
    capsys.readouterr()  # drop what earlier commands printed
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_show_reports_manifest_metrics_tags_and_sizes(run_dir, capsys):
    code, doc = run_json(capsys, "show", f"{run_dir}@best")
    assert code == 0 and doc["step"] == 20 and "best" in doc["tags"]
    assert doc["tensors"] == 4 and doc["logical_bytes"] > 0 and doc["versions"]["torch"] == torch.__version__


def test_diff_names_changed_layers_and_json_changes(run_dir, capsys):
    code, doc = run_json(capsys, "diff", f"{run_dir}@step:10", f"{run_dir}@step:40")
    assert code == 0
    assert [r["key"] for r in doc["changed"]] == ["task/teacher/backbone.1.weight"]
    assert doc["unchanged"] == 3
    assert pytest.approx(doc["changed"][0]["rel_change"], rel=1e-6) == 1.1**3 - 1
    assert {"path": "trainer/step", "a": 10, "b": 40} in doc["json_changes"]
    assert doc["metrics"]["acc"]["delta"] == pytest.approx(0.4)


def test_tag_with_note_then_untag(run_dir, capsys):
    assert main(["tag", f"{run_dir}@step:30", "paper-fig3", "--note", "used in figure 3"]) == 0
    code, doc = run_json(capsys, "show", f"{run_dir}@tag:paper-fig3")
    assert doc["step"] == 30 and doc["notes"][0]["note"] == "used in figure 3"
    assert main(["untag", f"{run_dir}@step:30", "paper-fig3"]) == 0
    assert main(["show", f"{run_dir}@tag:paper-fig3"]) == 2


def test_gc_keeps_pinned_best_and_latest(run_dir, capsys):
    assert main(["pin", f"{run_dir}@step:10", "--note", "baseline"]) == 0
    code, report = run_json(capsys, "gc", str(run_dir), "--keep-last", "1")
    assert code == 0 and report["deleted"] == ["step_000000030"] and report["freed_bytes"] > 0
    code, rows = run_json(capsys, "ls", str(run_dir))
    assert [r["step"] for r in rows] == [10, 20, 40]


def test_gc_dry_run_deletes_nothing(run_dir, capsys):
    code, report = run_json(capsys, "gc", str(run_dir), "--keep-last", "1", "--dry-run")
    assert report["dry_run"] and report["deleted"] == ["step_000000010", "step_000000030"]
    assert len(run_json(capsys, "ls", str(run_dir))[1]) == 4


def test_gc_refuses_a_negative_keep_last_naming_the_option(run_dir, capsys):
    capsys.readouterr()
    assert main(["gc", str(run_dir), "--keep-last", "-1"]) == 2
    assert "--keep-last: must be a non-negative integer, got -1" in capsys.readouterr().err
    assert len(run_json(capsys, "ls", str(run_dir))[1]) == 4


def test_export_part_as_safetensors_strips_the_prefix(run_dir, tmp_path, capsys):
    out = tmp_path / "teacher.safetensors"
    code, doc = run_json(capsys, "export", f"{run_dir}@best", str(out), "--part", "task/teacher/backbone")
    assert code == 0 and doc["tensors"] == 4
    net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
    net.load_state_dict(load_file(out))


def test_export_refuses_to_overwrite(run_dir, tmp_path):
    out = tmp_path / "x.pt"
    out.write_text("precious")
    assert main(["export", str(run_dir), str(out), "--format", "pt"]) == 2  # a refusal: nothing changed
    assert out.read_text() == "precious"


def test_import_foreign_checkpoint_layout(tmp_path, capsys):
    net = torch.nn.Linear(3, 2)
    torch.save(
        {"student_state_dict": net.state_dict(), "teacher_state_dict": net.state_dict(), "epoch": 7, "step": 700},
        tmp_path / "old.pth",
    )
    code, doc = run_json(capsys, "import", str(tmp_path / "old.pth"), str(tmp_path / "imported"))
    assert code == 0 and doc["layout"] == "student-teacher" and doc["step"] == 700
    state = CheckpointManager(tmp_path / "imported" / "checkpoints", read_only=True).restore("tag:imported")
    assert torch.equal(state["teacher_state_dict"]["weight"], net.weight)


def test_import_refuses_code_executing_pickle(tmp_path, capsys):
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    assert main(["import", str(tmp_path / "evil.pt"), str(tmp_path / "imp")]) == 2  # unusable input: refused, nothing changed
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_backup_is_incremental_and_the_copy_verifies(run_dir, tmp_path, capsys):
    dest = tmp_path / "backup"
    code, first = run_json(capsys, "backup", str(run_dir), str(dest))
    assert code == 0 and first["copied"]
    code, second = run_json(capsys, "backup", str(run_dir), str(dest))
    assert second["copied"] == [] and second["unchanged"] == sum(c.endswith("manifest.json") for c in first["copied"])
    assert main(["verify", str(dest)]) == 0
    assert main(["tag", f"{run_dir}@step:20", "keep"]) == 0
    code, third = run_json(capsys, "backup", str(run_dir), str(dest))
    assert third["copied"] == ["checkpoints/step_000000020/manifest.json"]  # the new tags (the index is derived)


def test_every_command_has_help_with_an_example(capsys):
    for cmd in ("ls", "verify", "du", "show", "diff", "tag", "untag", "pin", "gc", "export", "import", "backup"):
        assert main([cmd, "--help"]) == 0
        assert "example: waypoint" in capsys.readouterr().out


def test_show_tensors_lists_each_tensor_and_whether_it_changed_since_the_previous_checkpoint(run_dir, capsys):
    code, doc = run_json(capsys, "show", f"{run_dir}@step:20", "--tensors")
    table = {t["name"]: t for t in doc["tensor_table"]}
    assert code == 0 and len(table) == doc["tensors"] == 4
    weight = table["task/teacher/backbone.1.weight"]
    assert weight["shape"] == [4, 16] and weight["bytes"] == 4 * 16 * 4 and weight["changed"] == "changed"
    assert [t["changed"] for k, t in table.items() if k != "task/teacher/backbone.1.weight"] == ["same"] * 3
    code, first = run_json(capsys, "show", f"{run_dir}@step:10", "--tensors")
    assert {t["changed"] for t in first["tensor_table"]} == {"-"}
    assert main(["show", f"{run_dir}@step:20", "--tensors"]) == 0
    assert "task/teacher/backbone.1.weight" in capsys.readouterr().out


@pytest.fixture
def kept_run(tmp_path):
    """Ten checkpoints under a policy keeping the 2 newest, a milestone at step 30 and 3 evolution snapshots."""
    pools = (KeepLast(2), KeepMilestones(steps=frozenset({30})), KeepEvolution(3, 100))
    with CheckpointManager(tmp_path / "run" / "checkpoints", RetentionPolicy(pools)) as mgr:
        for step in range(10, 101, 10):
            mgr.save({"w": torch.full((8,), float(step))}, step)
    return tmp_path / "run"


def steps(run):
    with CheckpointManager(run / "checkpoints", read_only=True) as mgr:
        return [i.step for i in mgr.list()]


def test_gc_keep_last_never_deletes_milestones_evolution_snapshots_or_pins(kept_run, capsys):
    assert steps(kept_run) == [10, 30, 50, 90, 100]  # evolution targets 0, 50, 100 -> 10, 50, 100
    assert main(["pin", f"{kept_run}@step:90"]) == 0
    code, report = run_json(capsys, "gc", str(kept_run), "--keep-last", "0")
    assert code == 0 and report["deleted"] == [] and steps(kept_run) == [10, 30, 50, 90, 100]


def test_gc_drops_milestones_and_evolution_snapshots_only_when_told(kept_run, capsys):
    code, report = run_json(capsys, "gc", str(kept_run), "--keep-last", "1", "--drop", "milestones")
    assert report["deleted"] == ["step_000000030", "step_000000090"] and steps(kept_run) == [10, 50, 100]
    code, report = run_json(capsys, "gc", str(kept_run), "--keep-last", "1", "--drop", "evolution")
    assert report["deleted"] == ["step_000000010", "step_000000050"] and steps(kept_run) == [100]


def test_backup_keep_last_prunes_the_copy_and_keeps_its_pins(run_dir, tmp_path, capsys):
    assert main(["pin", f"{run_dir}@step:10"]) == 0
    code, doc = run_json(capsys, "backup", str(run_dir), str(tmp_path / "copy"), "--keep-last", "1")
    assert code == 0 and doc["deleted"] == ["step_000000030"]  # 10 is pinned, 20 the best, 40 the newest
    assert steps(tmp_path / "copy") == [10, 20, 40] and steps(run_dir) == [10, 20, 30, 40]
    assert {p.name for p in (tmp_path / "copy").iterdir()} >= {"checkpoints"}
