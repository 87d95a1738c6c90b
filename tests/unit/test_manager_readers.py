"""The manager's typed readers: everything outside the checkpoint package learns about a checkpoint through them."""

import pytest
import torch

from waypoint.checkpoint import CheckpointManager, Manifest, NoCheckpointError, TensorEntry


def _two_saves(root):
    with CheckpointManager(root, monitor="val/acc") as mgr:
        frozen = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        mgr.save({"model": {"w": torch.zeros(5), "frozen": frozen}, "cfg": {"lr": 0.1}}, step=1, metrics={"val/acc": 0.5})
        mgr.save({"model": {"w": torch.ones(5), "frozen": frozen}, "cfg": {"lr": 0.1}}, step=2, metrics={"val/acc": 0.4})


def test_manifest_is_typed_data_with_the_tensor_table(tmp_path):
    _two_saves(tmp_path / "ck")
    with CheckpointManager(tmp_path / "ck", read_only=True) as mgr:
        m = mgr.manifest("step:2")
    assert isinstance(m, Manifest) and m.step == 2 and m.metrics == {"val/acc": 0.4}
    frozen = m.tensors["model/frozen"]
    assert frozen == TensorEntry(frozen.id, "F32", (3, 4), 48, frozen.pack)
    assert m.content_hash == "blake3" and m.tensors["model/w"].id.startswith("b3:")
    assert sum(m.packs.values()) > 0


def test_tensors_and_tree_are_read_by_selector_without_a_lock(tmp_path):
    _two_saves(tmp_path / "ck")
    with CheckpointManager(tmp_path / "ck", read_only=True) as mgr:
        assert torch.equal(mgr.tensor("best", "model/w"), torch.zeros(5))  # best is step 1 (0.5 > 0.4)
        assert dict(mgr.tensors("latest", ["model/w", "absent"])).keys() == {"model/w"}
        assert mgr.tree("latest")["cfg"] == {"lr": 0.1}
        with pytest.raises(KeyError, match="absent"):
            mgr.tensor("latest", "absent")


def test_sizes_name_the_packs_a_checkpoint_shares(tmp_path):
    _two_saves(tmp_path / "ck")
    with CheckpointManager(tmp_path / "ck", read_only=True) as mgr:
        first, second = mgr.sizes("step:1"), mgr.sizes("step:2")
        assert mgr.manifest("step:1").tensors["model/frozen"].pack in second.packs  # written once, named by both
        assert first.own > 0 and second.logical == mgr.manifest("step:2").logical_bytes
        assert mgr.physical_bytes() >= sum(second.packs.values()) + second.own


def test_verify_one_names_a_damaged_tensor(tmp_path):
    _two_saves(tmp_path / "ck")
    with CheckpointManager(tmp_path / "ck", read_only=True) as mgr:
        pack = mgr.manifest("step:2").tensors["model/w"].pack
        assert mgr.verify_one("step:2") == []
    path = tmp_path / "ck" / "packs" / pack
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # the last tensor's bytes
    path.write_bytes(bytes(raw))
    with CheckpointManager(tmp_path / "ck", read_only=True) as mgr:
        problems = mgr.verify_one("step:2")
    assert problems and any("model/" in p or "tensor" in p for p in problems)


def test_list_can_leave_out_damaged_manifests(tmp_path):
    _two_saves(tmp_path / "ck")
    (tmp_path / "ck" / "step_000000001" / "manifest.json").write_text("{")
    with CheckpointManager(tmp_path / "ck", read_only=True) as mgr:
        assert [i.step for i in mgr.list()] == [1, 2] and not mgr.list()[0].valid
        assert [i.step for i in mgr.list(include_invalid=False)] == [2]
        with pytest.raises(NoCheckpointError):
            mgr.manifest("step:3")
