"""A verified restore compares each raw tensor with the XXH3-128 checksum its pack header records (the header is
covered by the SHA-256 in the manifest); verify() still re-hashes every tensor with its BLAKE3 content id."""

import json
from pathlib import Path

import pytest
import torch

from waypoint.checkpoint import CheckpointError, CheckpointManager
from waypoint.checkpoint.packs import fast_check


def header_and_offset(root: Path, key: str) -> tuple[Path, dict, int]:
    t = json.loads((root / "step_000000001" / "manifest.json").read_text())["tensors"][key]
    pack = root / "packs" / t["pack"]
    raw = pack.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    return pack, header, 8 + n + header[t["id"]]["data_offsets"][0]


def test_every_raw_tensor_of_a_new_pack_has_its_checksum_in_the_header(tmp_path):
    w = torch.randn(300, 7)
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save({"w": w, "b": torch.arange(5)}, step=1)
    _, header, _ = header_and_offset(tmp_path / "ck", "w")
    checks = json.loads(header["__metadata__"]["checks"])
    ids = {k for k in header if k != "__metadata__"}
    assert set(checks) == ids
    cid = json.loads((tmp_path / "ck" / "step_000000001" / "manifest.json").read_text())["tensors"]["w"]["id"]
    assert checks[cid] == fast_check(w.numpy().tobytes())


@pytest.mark.parametrize("mmap", [False, True])
def test_a_verified_restore_refuses_a_flipped_bit_by_its_checksum(tmp_path, mmap):
    root = tmp_path / "ck"
    with CheckpointManager(root) as mgr:
        mgr.save({"w": torch.randn(300, 7)}, step=1)
    pack, _, offset = header_and_offset(root, "w")
    raw = bytearray(pack.read_bytes())
    raw[offset + 1000] ^= 4
    pack.write_bytes(bytes(raw))
    with CheckpointManager(root, read_only=True) as mgr:
        with pytest.raises(CheckpointError, match="checksum"):
            mgr.restore("step:1", mmap=mmap)
        (problems,) = mgr.verify().values()
        assert problems and "BLAKE3" in problems[0]  # the deep check names the content id


@pytest.mark.parametrize("nbytes", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 5 * (1 << 20) + 7])
def test_a_check_read_in_pieces_is_the_one_shot_xxh3_128(nbytes):
    import xxhash

    data = torch.randint(0, 256, (nbytes,), dtype=torch.uint8).numpy().tobytes()
    assert fast_check(data) == fast_check(memoryview(data)) == xxhash.xxh3_128_hexdigest(data)
