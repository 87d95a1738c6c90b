"""The web interface's view models on real stores (written through the manager), without a browser or Gradio."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from uikit import make_run

from waypoint.checkpoint import CheckpointManager
from waypoint.cli import main
from waypoint.ui import ActionRefusedError, PathRefusedError, UIError, actions, charts, compare, detail, runs
from waypoint.ui.catalog import Catalog, check_selector


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    out = tmp_path / "outputs"
    make_run(out / "toy" / "done")
    make_run(out / "toy" / "preempted", (1.0, 0.9), last_tags=("preempt",), overrides=("model=toy", "seed=1"))
    make_run(out / "toy" / "crashed", (1.0,), last_tags=("emergency",))
    sweep = tmp_path / "multirun" / "toy" / "lr-sweep"
    make_run(sweep / "lr=0.1", (0.9, 0.8), overrides=("model=toy", "model.lr=0.1"))
    make_run(sweep / "lr=0.2", (0.9, 0.6), overrides=("model=toy", "model.lr=0.2"))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return out


@pytest.fixture
def catalog(outputs: Path) -> Catalog:
    return Catalog([outputs, outputs.parent / "multirun"])


def by_run(rows):
    return {r["run"]: r for r in rows}


# ---------------------------------------------------------------------- Runs
def test_runs_table_has_status_model_overrides_steps_metrics_and_disk(catalog: Catalog) -> None:
    rows = by_run(runs.runs_table(catalog))
    done = rows["outputs/toy/done"]
    assert done["status"] == "finished" and done["model"] == "toy" and done["overrides"] == "model=toy"
    assert done["steps"] == 30 and done["monitor"] == "val/loss" and done["best"] == 0.5 and done["last"] == 0.7
    assert done["wall time (s)"] == 21.0 and done["checkpoints"] == 3
    assert 0 < done["physical MiB"] < done["logical MiB"]  # the frozen head is stored once
    assert rows["outputs/toy/preempted"]["status"] == "preempted"
    assert rows["outputs/toy/crashed"]["status"] == "failed"


def test_a_run_whose_writer_lock_is_held_is_running_and_reading_it_takes_no_lock(catalog: Catalog, outputs: Path) -> None:
    with CheckpointManager(outputs / "toy" / "done" / "checkpoints"):  # a "training" process holds the lock
        row = by_run(runs.runs_table(catalog))["outputs/toy/done"]
        assert row["status"] == "running" and f"pid {os.getpid()}" in row["note"]
    assert by_run(runs.runs_table(catalog))["outputs/toy/done"]["status"] == "finished"


def test_sweep_jobs_are_grouped_with_analyzes_sweep_table(catalog: Catalog) -> None:
    rows = by_run(runs.runs_table(catalog))
    assert rows["multirun/toy/lr-sweep/lr=0.1"]["sweep"] == "multirun/toy/lr-sweep"
    assert rows["outputs/toy/done"]["sweep"] == ""
    table = runs.sweep_table(catalog, "multirun/toy/lr-sweep")
    assert [(r["job"], r["overrides"], r["best"], r["status"]) for r in table] == [
        ("lr=0.1", "model=toy model.lr=0.1", 0.8, "finished"),
        ("lr=0.2", "model=toy model.lr=0.2", 0.6, "finished"),
    ]


def test_runs_filter_by_words_and_status_and_sort_by_any_column(catalog: Catalog) -> None:
    rows = runs.runs_table(catalog)
    assert [r["run"] for r in runs.filter_rows(rows, "seed=1")] == ["outputs/toy/preempted"]
    assert [r["run"] for r in runs.filter_rows(rows, "lr sweep 0.2")] == ["multirun/toy/lr-sweep/lr=0.2"]
    assert {r["run"] for r in runs.filter_rows(rows, "", "failed")} == {"outputs/toy/crashed"}
    best = [r["best"] for r in runs.sort_rows(rows, "best")]
    assert best[:4] == sorted(best[:4]) and best[4:] == [None]  # no best: last either way
    assert runs.sort_rows(rows, "steps", descending=True)[0]["steps"] == 30


# ---------------------------------------------------------------------- Run
def test_checkpoint_records_are_what_waypoint_ls_json_prints(catalog: Catalog, outputs: Path, capsys) -> None:
    view = detail.run_view(catalog, "outputs/toy/done")
    capsys.readouterr()
    assert main(["ls", str(outputs / "toy" / "done"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(view["records"]))
    assert [r[0] for r in view["rows"]] == ["step_000000010", "step_000000020", "step_000000030"]
    assert view["rows"][1][3] == "best" and view["rows"][2][3] == "end,latest"


def test_metric_chart_marks_each_checkpoint_with_hover_text_naming_step_tags_and_metrics(catalog: Catalog) -> None:
    view = detail.run_view(catalog, "outputs/toy/done")
    assert view["metric"] == "val/loss" and view["metrics"][0] == "val/loss"
    svg = view["metric_svg"]
    assert svg.startswith("<svg") and svg.count("<circle") == 3
    assert "<title>step_000000020  step 20  tags [best]\nval/loss=0.5</title>" in svg
    other = detail.run_view(catalog, "outputs/toy/done", "train/loss")
    assert other["metric"] == "train/loss" and other["metric_svg"].count("<circle") == 3
    assert "physical (deduplicated)" in view["storage_svg"]


def test_the_run_view_shows_notes_and_new_checkpoints_on_the_next_read(catalog: Catalog, outputs: Path) -> None:
    actions.tag(catalog, "outputs/toy/done", "step:10", "fig3", "used in figure 3")
    with CheckpointManager(outputs / "toy" / "done" / "checkpoints") as mgr:  # training goes on
        mgr.save({"x": mgr.tensors("latest").__next__()[1]}, 40, metrics={"val/loss": 0.2})
    view = detail.run_view(catalog, "outputs/toy/done")
    assert [r[0] for r in view["rows"]][-1] == "step_000000040" and view["rows"][-1][3] == "best,latest"
    assert view["rows"][0][3] == "fig3" and view["rows"][0][-1] == "used in figure 3"


def test_chart_escapes_text_and_says_when_there_is_nothing_to_draw() -> None:
    chart = charts.Chart("<b>x</b>", "step", "y", {"s": [(0, 1.0), (1, math.nan), (2, 2.0)]}, [charts.Marker(1, 1.5, "a<b")])
    svg = charts.svg(chart)
    assert "<b>x</b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and "a&lt;b" in svg
    assert "nothing to draw" in charts.svg(charts.Chart("empty", "x", "y"))


# ---------------------------------------------------------------------- Compare
def test_compare_two_checkpoints_has_metrics_module_change_cosine_and_config_diff(catalog: Catalog) -> None:
    doc = compare.compare(catalog, ["outputs/toy/done@step:10", "outputs/toy/done@step:30"])
    assert doc["labels"] == ["outputs/toy/done@step_000000010", "outputs/toy/done@step_000000030"]
    assert doc["metrics"] == [["val/loss", 1.0, 0.7]]
    (pair,) = doc["pairs"]
    modules = {m[0]: m for m in pair["modules"]}
    assert modules["task.body"][1:3] == [1, 0]
    assert modules["task.body"][3] == pytest.approx(1.1**2 - 1) and modules["task.body"][4] == pytest.approx(1.0)
    assert modules["task.head"][1:] == [0, 1, 0.0, 1.0]  # frozen: same content id, never read
    assert pair["config"] == []


def test_compare_across_runs_shows_config_differences(tmp_path: Path) -> None:
    a = make_run(tmp_path / "root" / "a")
    make_run(tmp_path / "root" / "b", config={"name": "toy", "seed": 1, "model": {"_target_": "x.ToyTask", "width": 16}})
    cat = Catalog([tmp_path / "root"])
    doc = compare.compare(cat, ["root/a@best", "root/b@best", "root/b@latest"])
    assert len(doc["pairs"]) == 2 and a.exists()
    assert ["model.width", 8, 16] in doc["pairs"][0]["config"] and ["seed", 0, 1] in doc["pairs"][0]["config"]


def test_compare_needs_two_checkpoints(catalog: Catalog) -> None:
    with pytest.raises(UIError, match="at least two"):
        compare.compare(catalog, ["outputs/toy/done@best"])


def test_module_rollup_weights_tensors_by_their_norms() -> None:
    rows = [
        {"key": "m/a.weight", "a_norm": 3.0, "b_norm": 3.0, "diff_norm": 0.0, "cosine": 1.0},
        {"key": "m/a.bias", "a_norm": 4.0, "b_norm": 4.0, "diff_norm": 5.0, "cosine": -0.5625},
    ]
    (m,) = compare.module_rollup(rows)
    assert m["module"] == "m.a" and m["rel_change"] == pytest.approx(1.0)
    assert m["cosine"] == pytest.approx((9 - 9) / 25)


# ---------------------------------------------------------------------- Act
def test_tag_with_note_shows_in_waypoint_ls_and_untag_removes_it(catalog: Catalog, outputs: Path, capsys) -> None:
    assert (
        actions.tag(catalog, "outputs/toy/done", "step:10", "paper-fig3", "used in fig 3") == "step_000000010: tags [paper-fig3]"
    )
    capsys.readouterr()
    main(["ls", str(outputs / "toy" / "done"), "--json"])
    assert "paper-fig3" in json.loads(capsys.readouterr().out)[0]["tags"]
    actions.untag(catalog, "outputs/toy/done", "step:10", "paper-fig3")
    actions.pin(catalog, "outputs/toy/done", "step:10")
    with CheckpointManager(outputs / "toy" / "done" / "checkpoints", read_only=True) as mgr:
        assert mgr.one("step:10").tags == ("pinned",)


def test_write_actions_refuse_and_change_nothing_while_training_holds_the_lock(catalog: Catalog, outputs: Path) -> None:
    root = outputs / "toy" / "done" / "checkpoints"
    before = sorted(p.name for p in root.iterdir())
    with CheckpointManager(root):
        for act in (
            lambda: actions.tag(catalog, "outputs/toy/done", "step:10", "x"),
            lambda: actions.delete(catalog, "outputs/toy/done", "step:10", confirmed=True),
            lambda: actions.gc(catalog, "outputs/toy/done", keep_last=0, dry_run=False, confirmed=True),
        ):
            with pytest.raises(ActionRefusedError, match="already being written by pid"):
                act()
        assert "would delete" in actions.gc_text(actions.gc(catalog, "outputs/toy/done", keep_last=0))  # a preview reads
    assert sorted(p.name for p in root.iterdir()) == before
    with CheckpointManager(root, read_only=True) as mgr:
        assert [i.tags for i in mgr.list()] == [(), (), ("end",)]


def test_delete_refuses_best_and_latest_unless_forced_and_needs_confirmation(catalog: Catalog) -> None:
    with pytest.raises(ActionRefusedError, match="step_000000020 is best"):
        actions.delete(catalog, "outputs/toy/done", "best", confirmed=True)
    with pytest.raises(ActionRefusedError, match="is latest"):
        actions.delete(catalog, "outputs/toy/done", "latest", confirmed=True, dry_run=True)
    with pytest.raises(ActionRefusedError, match="confirmation"):
        actions.delete(catalog, "outputs/toy/done", "step:10", confirmed=False)
    preview = actions.delete(catalog, "outputs/toy/done", "step:10", confirmed=False, dry_run=True)
    assert actions.delete_text(preview).startswith("would delete step_000000010 (step 10)")
    done = actions.delete(catalog, "outputs/toy/done", "best", confirmed=True, force=True)
    assert done["deleted"] == "step_000000020" and done["was"] == ["best"]


def test_gc_preview_lists_what_would_go_and_deletes_nothing(catalog: Catalog, outputs: Path) -> None:
    report = actions.gc(catalog, "outputs/toy/done", keep_last=0, dry_run=True)
    assert report["deleted"] == ["step_000000010"]  # best and latest are kept
    assert (outputs / "toy" / "done" / "checkpoints" / "step_000000010").is_dir()
    with pytest.raises(ActionRefusedError, match="confirmation"):
        actions.gc(catalog, "outputs/toy/done", keep_last=0, dry_run=False)
    assert actions.gc(catalog, "outputs/toy/done", keep_last=0, dry_run=False, confirmed=True)["deleted"] == ["step_000000010"]


def test_verify_names_the_damaged_tensor_by_its_state_key(catalog: Catalog, outputs: Path) -> None:
    run = outputs / "toy" / "preempted"
    with CheckpointManager(run / "checkpoints", read_only=True) as mgr:
        entry = mgr.manifest("step:20").tensors["task/body/weight"]
    pack = run / "checkpoints" / "packs" / entry.pack
    data = bytearray(pack.read_bytes())
    data[-3] ^= 0xFF  # the last tensor written in the newest pack
    pack.write_bytes(bytes(data))
    results = actions.verify(catalog, "outputs/toy/preempted")
    bad = [r for r in results if not r["ok"]]
    assert bad and bad[0]["tensors"] == ["task/body/weight"]
    assert "damaged tensors: task/body/weight" in actions.verify_text(results)


def test_export_writes_only_the_part_asked_for_into_a_fresh_private_file(catalog: Catalog, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    doc = actions.export(catalog, "outputs/toy/done", "best", part="task/head", out_dir=tmp_path)
    path = Path(doc["path"])
    assert path.parent.parent == tmp_path and path.name == "done-step_000000020-task-head.safetensors"
    assert list(load_file(path)) == ["weight"]
    with pytest.raises(ActionRefusedError):
        actions.export(catalog, "outputs/toy/done", "best", part="../../etc", out_dir=tmp_path)


def test_commands_resume_and_evaluate_the_chosen_checkpoint(catalog: Catalog, outputs: Path) -> None:
    text = actions.commands(catalog, "outputs/toy/preempted", "latest")
    run = outputs / "toy" / "preempted"
    assert f"train.py model=toy seed=1 resume=step:20 hydra.run.dir={run}" in text
    assert f"train.py model=toy seed=1 resume={run}@step_000000020 trainer.eval_only=true" in text


# ---------------------------------------------------------------------- the fence
def test_runs_outside_the_roots_and_path_like_selectors_are_refused(catalog: Catalog, tmp_path: Path) -> None:
    make_run(tmp_path / "elsewhere" / "secret", (1.0,))
    for bad in ("outputs/../elsewhere/secret", "/etc", "elsewhere/secret", "outputs/toy/./done", "outputs/toy"):
        with pytest.raises(PathRefusedError):
            catalog.run(bad)
    for bad in ("../step_000000010", "/etc/passwd", "step_1/../../x", "tag:..", ""):
        with pytest.raises(PathRefusedError):
            check_selector(bad)
    with pytest.raises(PathRefusedError):
        compare.compare(catalog, ["outputs/toy/done@best", "elsewhere/secret@best"])


def test_a_symlink_inside_a_root_does_not_lead_out_of_it(catalog: Catalog, outputs: Path, tmp_path: Path) -> None:
    secret = make_run(tmp_path / "elsewhere" / "secret", (1.0,))
    (outputs / "toy" / "link").symlink_to(secret, target_is_directory=True)
    (outputs / "toy" / "inner").mkdir()
    (outputs / "toy" / "inner" / "checkpoints").symlink_to(secret / "checkpoints", target_is_directory=True)
    ids = {r.id for r in catalog.runs()}
    assert "outputs/toy/link" not in ids and "outputs/toy/inner" not in ids
    for bad in ("outputs/toy/link", "outputs/toy/inner"):
        with pytest.raises(PathRefusedError):
            catalog.run(bad)


def test_new_runs_and_checkpoints_appear_on_refresh(catalog: Catalog, outputs: Path) -> None:
    assert "outputs/toy/later" not in {r.id for r in catalog.runs()}
    make_run(outputs / "toy" / "later", (1.0,))
    assert "outputs/toy/later" in {r["run"] for r in runs.runs_table(catalog)}


def test_the_report_is_generated_inside_the_run_and_never_through_a_symlink(
    catalog: Catalog, outputs: Path, tmp_path: Path
) -> None:
    doc = actions.report(catalog, "outputs/toy/done")
    assert Path(doc["html"]) == outputs / "toy" / "done" / "report" / "report.html" and Path(doc["html"]).stat().st_size > 1000
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (outputs / "toy" / "preempted" / "report").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ActionRefusedError, match="symbolic link"):
        actions.report(catalog, "outputs/toy/preempted")
    assert list(elsewhere.iterdir()) == []


def test_the_view_models_work_without_gradio() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import waypoint.ui.actions, waypoint.ui.compare, waypoint.ui.detail, waypoint.ui.runs, waypoint.ui.serve; "
        "import waypoint.cli; print('gradio' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr
