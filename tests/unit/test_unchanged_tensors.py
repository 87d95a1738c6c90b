"""A save fingerprints each tensor (XXH3-128) and reuses the content id its key had at the last save only when the
fingerprint, dtype and shape match; everything else is hashed with BLAKE3 and stored. No copy of the state is kept."""

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waypoint.checkpoint import CheckpointManager, packs
from waypoint.checkpoint.storage import backend_for


@pytest.fixture
def hashed(monkeypatch) -> list[tuple]:
    """Every (dtype, shape) a save hashes, in order."""
    calls: list[tuple] = []
    real = packs.content_id

    def spy(dtype, shape, data, algorithm=None):
        calls.append((dtype, tuple(shape)))
        return real(dtype, shape, data, algorithm)

    monkeypatch.setattr(packs, "content_id", spy)
    return calls


def ids(info) -> dict[str, str]:
    return {k: t["id"] for k, t in json.loads((Path(info.path) / "manifest.json").read_text())["tensors"].items()}


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


@pytest.mark.parametrize("blocking", [True, False])
def test_only_the_changed_tensor_is_hashed_again(tmp_path, hashed, blocking):
    state = {"a": torch.zeros(1000), "b": torch.ones(10, 10), "c": torch.arange(7)}
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save(state, step=1, blocking=blocking)
        mgr.wait()
        assert len(hashed) == 3
        hashed.clear()
        state["b"] = state["b"] * 2
        mgr.save(state, step=2, blocking=blocking)
        mgr.wait()
        assert hashed == [("F32", (10, 10))]
        first, second = mgr.one("step:1"), mgr.one("step:2")
        assert ids(first)["a"] == ids(second)["a"] and ids(first)["b"] != ids(second)["b"]
        assert torch.equal(mgr.restore("step:2")["b"], torch.full((10, 10), 2.0))


@pytest.mark.parametrize("blocking", [True, False])
def test_a_tensor_changed_in_place_after_a_save_is_saved_with_its_new_bytes(tmp_path, blocking):
    w = torch.zeros(4096)
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save({"w": w}, step=1, blocking=blocking)
        w.add_(1.0)  # the caller's very tensor, mutated while (or after) step 1 is written
        mgr.save({"w": w}, step=2, blocking=blocking)
        w[-1] = 5.0  # one element, at the end
        mgr.save({"w": w}, step=3, blocking=blocking)
        mgr.wait()
        assert torch.equal(mgr.restore("step:1")["w"], torch.zeros(4096))
        assert torch.equal(mgr.restore("step:2")["w"], torch.ones(4096))
        assert torch.equal(mgr.restore("step:3")["w"], w)
        assert mgr.verify() == {f"step_{s:09d}": [] for s in (1, 2, 3)}


def test_floats_that_compare_equal_but_differ_in_bytes_count_as_changed(tmp_path):
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save({"w": torch.zeros(8)}, step=1)
        mgr.save({"w": -torch.zeros(8)}, step=2)  # -0.0 == 0.0, yet other bytes
        nan = torch.full((8,), float("nan"))
        mgr.save({"w": nan}, step=3)
        mgr.save({"w": nan.clone()}, step=4)  # NaN != NaN, yet the same bytes
        got = mgr.restore("step:2")["w"]
        assert torch.equal(bits(got), bits(-torch.zeros(8)))
        assert ids(mgr.one("step:3")) == ids(mgr.one("step:4"))


def test_the_same_bytes_under_another_shape_or_dtype_get_their_own_id(tmp_path):
    base = torch.arange(12, dtype=torch.int32)
    with CheckpointManager(tmp_path / "ck") as mgr:
        a = mgr.save({"w": base}, step=1)
        b = mgr.save({"w": base.reshape(3, 4)}, step=2)
        c = mgr.save({"w": base.view(torch.float32)}, step=3)
        assert len({ids(a)["w"], ids(b)["w"], ids(c)["w"]}) == 3
        assert mgr.restore("step:2")["w"].shape == (3, 4)
        assert mgr.restore("step:3")["w"].dtype == torch.float32


def test_an_unchanged_tensor_whose_stored_copy_is_damaged_is_written_again(tmp_path):
    root = tmp_path / "ck"
    state = {"w": torch.arange(1024, dtype=torch.float32)}
    with CheckpointManager(root) as mgr:
        first = mgr.save(state, step=1)
        pack = next((root / "packs").iterdir())
        raw = bytearray(pack.read_bytes())
        raw[-1] ^= 1
        pack.write_bytes(bytes(raw))
        assert mgr.verify()["step_000000001"]  # found damaged: forgotten by the dedup table
        second = mgr.save(state, step=2)  # unchanged since step 1: its id is reused, its bytes written anew
        assert ids(first) == ids(second)
        assert mgr.verify()["step_000000002"] == []
        assert torch.equal(mgr.restore("step:2")["w"], state["w"])


def test_tied_tensors_stay_one_copy_and_untying_them_is_seen(tmp_path):
    shared = torch.ones(16)
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save({"a": shared, "b": shared}, step=1, blocking=False)
        mgr.save({"a": shared, "b": shared * 3}, step=2, blocking=False)
        mgr.save({"a": shared * 5, "b": shared * 3}, step=3, blocking=False)
        mgr.wait()
        got = mgr.restore("step:1")
        assert got["a"] is got["b"]
        assert torch.equal(mgr.restore("step:2")["b"], torch.full((16,), 3.0))
        assert torch.equal(mgr.restore("step:3")["a"], torch.full((16,), 5.0))


def test_blocking_saves_keep_no_copy_and_hash_nothing_unchanged_with_blake3(tmp_path, hashed):
    state = {"w": torch.ones(100), "b": torch.zeros(3)}
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save(state, step=1)
        mgr.save(state, step=2)
        assert len(hashed) == 2  # the first save only: the second matched both fingerprints
        assert mgr.staging.nbytes == 0
        assert ids(mgr.one("step:1")) == ids(mgr.one("step:2"))


def test_async_saves_copy_only_the_tensors_that_change(tmp_path):
    frozen, trained = torch.ones(4096), torch.zeros(1024)
    with CheckpointManager(tmp_path / "ck") as mgr:
        for step in range(1, 5):
            trained.add_(1.0)
            mgr.save({"frozen": frozen, "trained": trained}, step=step, blocking=False)
        mgr.wait()
        assert mgr.staging.nbytes == trained.numel() * 4  # the frozen tensor was copied once, then only fingerprinted
        assert torch.equal(mgr.restore("step:4")["trained"], torch.full((1024,), 4.0))
        assert torch.equal(mgr.restore("step:4")["frozen"], frozen)


def test_a_given_tensor_whose_bytes_changed_is_refused_not_written_under_its_old_id(tmp_path):
    w = torch.arange(2048, dtype=torch.float32)
    stale = packs.TensorRecord(packs.content_id("F32", (2048,), packs.raw_bytes(w)), "F32", (2048,), 8192, check="0" * 32)
    with ThreadPoolExecutor(2) as pool, pytest.raises(packs.IntegrityError, match="changed while it was being saved"):
        packs.write_pack(backend_for(tmp_path), [w], lambda _cid: False, pool, [stale])
    assert not [p for p in (tmp_path / "packs").iterdir()]


def _flip(t: torch.Tensor, index: int, value: int) -> torch.Tensor:
    out = t.clone()
    raw = out.reshape(-1).view(torch.uint8)
    raw[index % raw.numel()] = value if value != raw[index % raw.numel()] else (value + 1) % 256
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(["big", "half", "ints", "one"]),
    index=st.integers(min_value=0, max_value=(1200 << 10) - 1),
    value=st.integers(min_value=0, max_value=255),
    blocking=st.booleans(),
)
def test_a_change_of_any_single_byte_is_always_saved(which, index, value, blocking):
    g = torch.Generator().manual_seed(0)
    state = {
        "big": torch.randn(300 << 10, generator=g),  # 1.2 MiB: its XXH3 check is read in two pieces
        "half": torch.randn(33, 7, generator=g).half(),
        "ints": torch.arange(1000),
        "one": torch.tensor(3.5),
    }
    with tempfile.TemporaryDirectory() as d, CheckpointManager(Path(d) / "ck") as mgr:
        for step in (1, 2):  # the second save sees every tensor unchanged, as the flipped save would expect
            mgr.save(state, step=step, blocking=blocking)
        changed = {**state, which: _flip(state[which], index, value)}
        mgr.save(changed, step=3, blocking=blocking)
        mgr.wait()
        got = mgr.restore("step:3")
        for key, t in changed.items():
            assert torch.equal(bits(got[key]), bits(t)), key
        assert ids(mgr.one("step:3"))[which] != ids(mgr.one("step:2"))[which]
