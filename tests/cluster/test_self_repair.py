"""Checkpoints that repair themselves, on both backends (a local directory and the S3 server): parity per pack and
spare copies of manifests and state rebuild what they promise, `waypoint verify --repair` says per checkpoint what
it did or could not do, a kill during a repair loses nothing, and a damaged resume source is repaired."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from waypoint import cli
from waypoint.checkpoint import CheckpointManager
from waypoint.checkpoint.storage import backend_for

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "ck")
    return f"s3://{request.getfixturevalue('bucket')}/run/checkpoints"


def state(step: int, n: int = 200_000) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"frozen": torch.arange(4096.0), "live": torch.randn(n, generator=g), "step": step}


def saved(location: str, parity: bool = True, n: int = 200_000) -> tuple[str, str]:
    """Steps 1 and 2 (step 2's own pack holds ``live``); returns (step 2's name, that pack's key)."""
    with CheckpointManager(location, parity=parity) as mgr:
        mgr.save(state(1, n), step=1)
        info = mgr.save(state(2, n), step=2)
        own = set(mgr.manifest(info.name).packs) - set(mgr.manifest("step:1").packs)
    return info.name, f"packs/{own.pop()}"


def rewrite(backend, key: str, change) -> None:
    data = bytearray(backend.read(key))
    backend.put(key, bytes(change(data)))


def zero_sixteenth(data: bytearray) -> bytearray:
    start, n = len(data) // 3, len(data) // 16
    data[start : start + n] = bytes(n)
    return data


def flip(offset: int):
    def change(data: bytearray) -> bytearray:
        data[offset] ^= 0x40
        return data

    return change


DAMAGE = {
    "one flipped byte": lambda b, name, pack: rewrite(b, pack, flip(-7)),
    "a zeroed region of 1/16 of the pack": lambda b, name, pack: rewrite(b, pack, zero_sixteenth),
    "a truncated tail of 1/16 of the pack": lambda b, name, pack: rewrite(b, pack, lambda d: d[: len(d) - len(d) // 16]),
    "a deleted parity object": lambda b, name, pack: b.delete(f"{pack}.parity"),
    "a damaged manifest": lambda b, name, pack: rewrite(b, f"{name}/manifest.json", flip(60)),
    "a damaged state file": lambda b, name, pack: rewrite(b, f"{name}/state.json", flip(5)),
}


def problems(location: str) -> dict[str, list[str]]:
    with CheckpointManager(location, read_only=True) as reader:
        return {n: p for n, p in reader.verify().items() if p} | {i.name: [i.problem] for i in reader.list() if not i.valid}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_verify_finds_the_damage_and_repair_rebuilds_it_bit_exact(location, damage, capsys):
    name, pack = saved(location)
    DAMAGE[damage](backend_for(location), name, pack)
    assert name in problems(location), f"{damage} went unnoticed"
    assert cli.main(["verify", location, "--repair"]) == 0
    out = capsys.readouterr().out
    assert f"repaired  {name}" in out and "0 damaged" in out, out
    assert problems(location) == {}
    with CheckpointManager(location, read_only=True) as reader:
        got = reader.restore(name)
    assert torch.equal(got["live"], state(2)["live"]) and got["step"] == 2


def test_what_parity_cannot_rebuild_is_named_and_exits_1_then_a_backup_repairs_it(location, tmp_path, capsys):
    name, pack = saved(location)
    with CheckpointManager(location, read_only=True) as src, CheckpointManager(str(tmp_path / "bk" / "checkpoints")) as bk:
        from waypoint.checkpoint.replicate import mirror

        mirror(src.store, bk.store)
    backend_for(location).delete(pack)  # a whole pack: parity rebuilds damaged parts, not all of it
    assert cli.main(["verify", location, "--repair"]) == 1
    out = capsys.readouterr().out
    assert f"damaged   {name}" in out and "parity rebuilds damaged parts" in out and f"still damaged: {name}" in out
    assert cli.main(["verify", location, "--repair", "--backup", str(tmp_path / "bk")]) == 0
    assert "copied from the backup" in capsys.readouterr().out
    assert problems(location) == {}


def test_a_store_without_parity_verifies_and_gets_it_on_request(location, capsys):
    name, pack = saved(location, parity=False)
    assert problems(location) == {}
    assert cli.main(["verify", location, "--repair", "--add-parity"]) == 0
    assert backend_for(location).size(f"{pack}.parity")
    with CheckpointManager(location, read_only=True) as reader:
        assert all(reader.manifest(i.name).packs for i in reader.list())
        assert reader.store.manifest(name)["packs"][pack.split("/")[1]]["parity"] > 0
    DAMAGE["a zeroed region of 1/16 of the pack"](backend_for(location), name, pack)
    assert cli.main(["verify", location, "--repair"]) == 0


REPAIRER = """
import sys
from waypoint.checkpoint import CheckpointManager
with CheckpointManager(sys.argv[1]) as mgr:
    print({n: o.status for n, o in mgr.repair().items()}, flush=True)
"""


def test_a_kill_at_random_points_during_a_repair_loses_nothing(location):
    name, pack = saved(location, n=6_000_000)  # 24 MB: a repair takes long enough to be cut short
    rng = random.Random(11)
    for _ in range(4):
        DAMAGE["a zeroed region of 1/16 of the pack"](backend_for(location), name, pack)
        child = subprocess.Popen([sys.executable, "-c", REPAIRER, location], stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.2, 1.5))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        with CheckpointManager(location) as mgr:  # the next writer finishes it
            assert {n: o.status for n, o in mgr.repair().items()}[name] in ("ok", "repaired")
        assert problems(location) == {}
    with CheckpointManager(location, read_only=True) as reader:
        assert torch.equal(reader.restore(name)["live"], state(2, 6_000_000)["live"])


def test_du_shows_parity_bytes_apart_and_gc_removes_parity_with_its_pack(location, capsys):
    saved(location)
    assert cli.main(["du", location, "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert 0 < doc["parity_bytes"] < 0.2 * doc["physical_bytes"]
    assert cli.main(["gc", location, "--keep-last", "1"]) == 0
    keys = backend_for(location).list("packs/")
    assert all(k.removesuffix(".parity") in keys for k in keys if k.endswith(".parity")), "a parity object outlived its pack"
