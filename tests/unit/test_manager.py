"""CheckpointManager: selectors, tags, retention after commit, async saves."""

import pytest
import torch

from waypoint.checkpoint import (
    BackgroundSaveError,
    CheckpointManager,
    KeepBest,
    KeepLast,
    NoCheckpointError,
    RetentionPolicy,
    UnsupportedValueError,
)


def save_series(mgr, steps, metric=None):
    for s in steps:
        mgr.save({"w": torch.full((4,), float(s))}, step=s, metrics={"acc": metric(s)} if metric else None)


def test_selectors_latest_best_step_and_tag(tmp_path):
    with CheckpointManager(tmp_path / "ck", monitor="acc", mode="max") as mgr:
        save_series(mgr, [1, 2, 3], metric=lambda s: {1: 0.2, 2: 0.9, 3: 0.5}[s])
        mgr.tag("step:1", "keepme")
        assert mgr.restore("latest")["w"][0] == 3
        assert mgr.restore("best")["w"][0] == 2
        assert mgr.restore("step:1")["w"][0] == 1
        assert mgr.restore("tag:keepme")["w"][0] == 1
        assert mgr.restore("step_000000002")["w"][0] == 2


def test_unknown_selector_is_one_clear_error(tmp_path):
    with CheckpointManager(tmp_path / "ck") as mgr:
        save_series(mgr, [1])
        with pytest.raises(NoCheckpointError, match="no checkpoint matches 'step:9'"):
            mgr.restore("step:9")


def test_latest_skips_emergency_checkpoints_unless_asked(tmp_path):
    with CheckpointManager(tmp_path / "ck") as mgr:
        save_series(mgr, [1])
        mgr.save({"w": torch.zeros(4)}, step=2, tags=("emergency",))
        assert mgr.restore("latest")["w"][0] == 1
        assert mgr.restore("tag:emergency")["w"][0] == 0


def test_list_marks_latest_and_best(tmp_path):
    with CheckpointManager(tmp_path / "ck", monitor="acc", mode="min") as mgr:
        save_series(mgr, [1, 2, 3], metric=lambda s: {1: 0.1, 2: 0.5, 3: 0.9}[s])
        tags = {i.step: i.all_tags for i in mgr.list()}
    assert tags == {1: ("best",), 2: (), 3: ("latest",)}


def test_derived_tags_cannot_be_set_by_hand(tmp_path):
    with CheckpointManager(tmp_path / "ck") as mgr:
        save_series(mgr, [1])
        with pytest.raises(ValueError, match="derived"):
            mgr.tag("latest", "best")


def test_retention_runs_after_commit_keeping_last_and_best(tmp_path):
    policy = RetentionPolicy((KeepLast(2), KeepBest(1, "acc", "max")))
    with CheckpointManager(tmp_path / "ck", policy, monitor="acc") as mgr:
        save_series(mgr, range(1, 7), metric=lambda s: 1.0 if s == 2 else s / 100)
        assert [i.step for i in mgr.list()] == [2, 5, 6]


def test_retention_never_deletes_the_checkpoint_resumed_from(tmp_path):
    with CheckpointManager(tmp_path / "ck") as mgr:
        save_series(mgr, [1, 2])
    with CheckpointManager(tmp_path / "ck", RetentionPolicy((KeepLast(1),))) as mgr:
        mgr.restore("step:1")
        save_series(mgr, [3, 4])
        assert [i.step for i in mgr.list()] == [1, 4]


def test_gc_removes_packs_of_deleted_checkpoints(tmp_path):
    with CheckpointManager(tmp_path / "ck") as mgr:
        save_series(mgr, [1, 2, 3])
        before = mgr.store.physical_bytes()
        report = mgr.gc(keep_last=1)
        assert report["deleted"] == ["step_000000001", "step_000000002"]
        assert len(report["packs_removed"]) == 2 and report["freed_bytes"] > 0
        assert mgr.store.physical_bytes() < before
        assert mgr.verify() == {"step_000000003": []}


def test_gc_dry_run_changes_nothing(tmp_path):
    with CheckpointManager(tmp_path / "ck") as mgr:
        save_series(mgr, [1, 2, 3])
        report = mgr.gc(keep_last=1, dry_run=True)
        assert report["deleted"] == ["step_000000001", "step_000000002"]
        assert len(mgr.list()) == 3


def test_async_save_returns_before_writing_and_snapshot_is_isolated(tmp_path):
    w = torch.ones(1000)
    with CheckpointManager(tmp_path / "ck") as mgr:
        assert mgr.save({"w": w}, step=1, blocking=False) is None
        w.add_(1)  # the caller keeps training; the snapshot must not see this
        mgr.wait()
        assert torch.equal(mgr.restore("latest")["w"], torch.ones(1000))


def test_failed_async_save_raises_at_next_call(tmp_path):
    import resource
    import signal

    mgr = CheckpointManager(tmp_path / "ck")
    mgr.save({"w": torch.ones(1)}, step=1)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old_limit[1]))  # a real write failure (EFBIG)
    try:
        mgr.save({"w": torch.randn(1 << 20)}, step=2, blocking=False)
        with pytest.raises(BackgroundSaveError, match="step 2.*intact"):
            mgr.save({"w": torch.ones(3)}, step=3)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert [i.step for i in mgr.list()] == [1]
    mgr.close()


def test_unsupported_state_is_refused_before_anything_is_written(tmp_path):
    with CheckpointManager(tmp_path / "ck") as mgr:
        with pytest.raises(UnsupportedValueError, match="'sched/fn'"):
            mgr.save({"sched": {"fn": object()}}, step=1)
        assert mgr.list() == []


def test_async_saves_reuse_snapshot_buffers_without_mixing_states(tmp_path):
    """The second async save copies into the first one's buffers; tied-then-untied keys stay apart."""
    w = torch.arange(6, dtype=torch.float32)
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save({"a": w, "b": w}, step=1, blocking=False)
        a2, b2 = torch.full((6,), 7.0), torch.full((6,), 9.0)
        mgr.save({"a": a2, "b": b2}, step=2, blocking=False)
        a2.fill_(0.0)  # the caller may change its tensors right after save() returns
        mgr.wait()
        first, second = mgr.restore("step:1"), mgr.restore("step:2")
    assert torch.equal(first["a"], w) and torch.equal(first["b"], w)
    assert torch.equal(second["a"], torch.full((6,), 7.0)) and torch.equal(second["b"], torch.full((6,), 9.0))


def test_every_commit_is_reported_once_with_its_bytes_time_mode_and_retention(tmp_path):
    reports = []
    with CheckpointManager(tmp_path / "ck", RetentionPolicy((KeepLast(1),))) as mgr:
        mgr.on_commit(reports.append)
        big = torch.arange(4096, dtype=torch.float32)
        mgr.save({"big": big, "step": 1}, step=1)
        mgr.save({"big": big, "step": 2}, step=2, blocking=False)  # the tensor is stored already
        mgr.wait()
    assert [(r.info.step, r.blocking) for r in reports] == [(1, True), (2, False)]
    assert reports[0].bytes_written > big.numel() * 4 > reports[1].bytes_written > 0
    assert all(r.seconds >= 0 for r in reports)
    assert reports[0].deleted == () and reports[1].deleted == ("step_000000001",)


def test_a_failing_commit_observer_never_fails_the_save(tmp_path):
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.on_commit(lambda report: 1 / 0)
        assert mgr.save({"w": torch.ones(2)}, step=1).step == 1
        assert mgr.restore("latest")["w"].sum() == 2
