"""Parameter evolution is computed exactly, streaming, and frozen tensors are flat."""

import math

import pytest
import torch

from waypoint.analysis.evolution import (
    INITIAL,
    aggregate,
    evolution_table,
    pair_distance,
    paired_keys,
    stack_of,
    storage_by_checkpoint,
    tensor_evolution,
    top_part,
)
from waypoint.checkpoint import CheckpointManager


@pytest.fixture
def mgr(tmp_path):
    frozen = torch.randn(64, 64)  # big enough that storing it once shows beside the manifests
    with CheckpointManager(tmp_path / "ck") as m:
        for step, scale in ((1, 1.0), (2, 2.0), (3, 4.0)):
            live = torch.ones(4, 4) * scale
            m.save(
                {
                    "model": {"stacks": {"0": {"w.weight": frozen}, "1": {"w.weight": live}}},
                    "student": {"l.weight": live + 1},
                    "teacher": {"l.weight": live},
                    "optimizer": {"m": live * 3},
                },
                step,
            )
    return CheckpointManager(tmp_path / "ck", read_only=True)


def test_relative_update_and_cosine_are_exact(mgr):
    rows = [r for r in aggregate(tensor_evolution(mgr)) if r["group"] == "model/stacks/1/w"]
    assert [r["rel_update"] for r in rows] == [None, pytest.approx(1.0), pytest.approx(1.0)]
    assert all(r["cos_to_final"] == pytest.approx(1.0) for r in rows)
    assert [r["norm"] for r in rows] == [pytest.approx(4.0), pytest.approx(8.0), pytest.approx(16.0)]


def test_frozen_tensors_show_zero_update(mgr):
    rows = [r for r in aggregate(tensor_evolution(mgr)) if r["group"] == "model/stacks/0/w"]
    assert [r["rel_update"] for r in rows][1:] == [0.0, 0.0]


def test_optimizer_state_is_not_treated_as_parameters(mgr):
    assert not any(r["key"].startswith("optimizer") for r in tensor_evolution(mgr))


def test_student_teacher_distance(mgr):
    pairs = paired_keys(["student/l.weight", "teacher/l.weight", "x"], "student", "teacher")
    assert pairs == [("student/l.weight", "teacher/l.weight")]
    dist = [r["rel_distance"] for r in pair_distance(mgr, pairs)]
    assert dist == [pytest.approx(1.0), pytest.approx(0.5), pytest.approx(0.25)]


def test_stack_grouping():
    assert stack_of("task/rack/stacks/2/blocks.0.attn.weight") == "stack 2"
    assert stack_of("task/student/backbone.blocks.0.weight") is None


def test_storage_rows_show_deduplication(mgr):
    rows = storage_by_checkpoint(mgr)
    assert rows[0]["physical_bytes"] > rows[1]["physical_bytes"]
    assert rows[-1]["cum_logical"] == sum(r["logical_bytes"] for r in rows)
    assert not math.isnan(rows[-1]["cum_physical"])


def test_lora_adapters_are_reported_apart_from_the_frozen_stack_they_adapt(tmp_path):
    base = torch.randn(8, 8)
    with CheckpointManager(tmp_path / "ck") as m:
        for step in (1, 2, 3):
            m.save(
                {
                    "task": {
                        "rack": {
                            "stacks": {
                                "0": {
                                    "blocks.0.attn.W_q.weight": base,
                                    "blocks.0.attn.W_q.lora.down": torch.ones(2, 8) * step,
                                    "blocks.0.attn.W_q.lora.up": torch.ones(8, 2) * step,
                                }
                            }
                        }
                    }
                },
                step,
            )
    with CheckpointManager(tmp_path / "ck", read_only=True) as mgr:
        rows = aggregate(tensor_evolution(mgr), stack_of)
    moved = {r["group"]: r["rel_update"] for r in rows if r["step"] == 3}
    assert moved["stack 0"] == 0.0
    assert moved["LoRA on stack 0"] == pytest.approx(0.5)
    assert stack_of("task/rack/stacks/1/blocks.0.mlp.up_proj.lora.up") == "LoRA on stack 1"


def test_evolution_starts_at_the_initial_weights_when_they_are_given(mgr):
    initial = {"model/stacks/1/w.weight": torch.ones(4, 4) * 0.5, "student/l.weight": torch.ones(4, 4)}
    rows = [r for r in aggregate(tensor_evolution(mgr, initial=initial)) if r["group"] == "model/stacks/1/w"]
    assert [(r["checkpoint"], r["step"]) for r in rows][:2] == [(INITIAL, 0), ("step_000000001", 1)]
    assert [r["rel_update"] for r in rows] == [None, pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0)]
    assert rows[0]["norm"] == pytest.approx(2.0)


def test_the_evolution_table_has_one_row_per_snapshot_from_step_0_and_one_column_set_per_part(tmp_path):
    with CheckpointManager(tmp_path / "ck") as m:
        for step in (5, 10):
            m.save({"task": {"student": {"l.weight": torch.ones(3, 3) * step}, "teacher": {"l.weight": torch.ones(3, 3)}}}, step)
    initial = {"task/student/l.weight": torch.ones(3, 3), "task/teacher/l.weight": torch.ones(3, 3)}
    with CheckpointManager(tmp_path / "ck", read_only=True) as mgr:
        header, rows = evolution_table(aggregate(tensor_evolution(mgr, initial=initial), top_part))
    assert header[:2] == ["step", "snapshot"] and "student update vs previous" in header and "teacher cosine to final" in header
    assert [r[:2] for r in rows] == [[0, INITIAL], [5, "step_000000005"], [10, "step_000000010"]]
    student = header.index("student update vs previous")
    assert rows[1][student] == pytest.approx(4.0) and rows[2][student] == pytest.approx(1.0)
    assert rows[2][header.index("teacher update vs previous")] == 0.0


def test_batchnorm_statistics_are_not_weights():
    from waypoint.analysis.evolution import parameter_keys
    from waypoint.checkpoint.manifest import TensorEntry

    table = {
        k: TensorEntry(id="x", dtype="F32", shape=(4,), nbytes=16, pack="p")
        for k in ("task/teacher/head/mlp.1.running_mean", "task/teacher/head/mlp.1.running_var", "task/teacher/head/mlp.1.weight")
    }
    assert parameter_keys(table) == ["task/teacher/head/mlp.1.weight"]
