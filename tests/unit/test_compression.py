"""checkpoint.compression=zstd: tensors stored byte-grouped + zstd, restored bit for bit, deduplicated against
raw copies, and verified on both their stored and their decoded bytes."""

import json
from pathlib import Path

import pytest
import torch

from waypoint.checkpoint import CheckpointError, CheckpointManager, compress


def trained_like() -> dict:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(128, 96, generator=g) * 0.02
    return {
        "f32": w,
        "bf16": w.to(torch.bfloat16),
        "f16": w.to(torch.float16),
        "f64": w[:40].double(),
        "i64": torch.arange(4096),
        "u8": torch.randint(0, 4, (8192,), dtype=torch.uint8, generator=g),
        "bool": torch.rand(8192, generator=g) > 0.9,
        "zeros": torch.zeros(10_000),
        "small": torch.randn(7, generator=g),
        "empty": torch.empty(0, 3),
        "step": 5,
    }


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


def pack_headers(root: Path) -> list[dict]:
    out = []
    for pack in (root / "packs").glob("*.safetensors"):
        raw = pack.read_bytes()
        out.append(json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")]))
    return out


@pytest.mark.parametrize("itemsize", [1, 2, 4, 8])
def test_byte_grouping_is_undone_exactly(itemsize):
    data = memoryview(bytes(range(256)) * 64)
    planes = compress.group_bytes(data, itemsize)
    assert bytes(planes.reshape(-1)[: len(data) // itemsize]) == bytes(data[::itemsize])  # plane 0: every element's byte 0
    out = bytearray(len(data))
    compress.ungroup_bytes(planes.tobytes(), itemsize, memoryview(out))
    assert bytes(out) == bytes(data)


def test_every_dtype_comes_back_bit_for_bit_and_the_compressible_ones_are_stored_compressed(tmp_path):
    state = trained_like()
    with CheckpointManager(tmp_path / "ck", compression="zstd") as mgr:
        mgr.save(state, step=1)
        for got in (mgr.restore("latest"), mgr.restore("latest", mmap=True), mgr.restore("latest", verify=False)):
            for key, want in state.items():
                assert bits_equal(got[key], want) if isinstance(want, torch.Tensor) else got[key] == want, key
        assert mgr.verify() == {"step_000000001": []}
        table = json.loads((tmp_path / "ck" / "step_000000001" / "manifest.json").read_text())["tensors"]
    (header,) = pack_headers(tmp_path / "ck")
    encoded = json.loads(header["__metadata__"]["encoded"])
    assert header["__metadata__"]["format"] == "waypoint-pack-3"
    assert {table[k]["id"] for k in ("f32", "bf16", "f16", "i64", "u8", "bool", "zeros")} <= set(encoded)
    assert table["small"]["id"] not in encoded  # below compress.MIN_BYTES: stored raw
    assert all(header[cid]["dtype"] == "U8" for cid in encoded)  # any safetensors reader opens the pack


def test_content_ids_do_not_depend_on_compression_so_saves_deduplicate_across_it(tmp_path):
    state = trained_like()
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save(state, step=1)
    with CheckpointManager(tmp_path / "ck", compression="zstd") as mgr:
        info = mgr.save(state, step=2)
        assert info is not None and len(list((tmp_path / "ck" / "packs").iterdir())) == 1  # nothing new written
        mgr.save({**state, "f32": state["f32"] + 1}, step=3)
        assert bits_equal(mgr.restore("step:3")["f32"], state["f32"] + 1)
        assert mgr.verify() == {f"step_00000000{i}": [] for i in (1, 2, 3)}


def flip_stored_byte(root: Path, key: str, offset: int) -> None:
    cid = json.loads((root / "step_000000001" / "manifest.json").read_text())["tensors"][key]["id"]
    (pack,) = (root / "packs").glob("*.safetensors")
    raw = bytearray(pack.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    raw[8 + n + json.loads(raw[8 : 8 + n])[cid]["data_offsets"][0] + offset] ^= 0x10
    pack.write_bytes(bytes(raw))


def test_a_flipped_bit_in_compressed_bytes_is_named_by_verify_and_refused_by_restore(tmp_path):
    root = tmp_path / "ck"
    with CheckpointManager(root, compression="zstd") as mgr:
        mgr.save(trained_like(), step=1)
    flip_stored_byte(root, "f32", 40)
    with CheckpointManager(root, read_only=True) as mgr:
        (problems,) = mgr.verify().values()
        assert problems and "stored (compressed) bytes" in problems[0]
        with pytest.raises(CheckpointError, match="damaged"):
            mgr.restore("step:1")


def test_an_unknown_compression_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="none, zstd"):
        CheckpointManager(tmp_path / "ck", compression="lz4")
    assert not (tmp_path / "ck").exists()
