"""Checkpoints on object storage: a real S3 server (moto, on 127.0.0.1) through s3fs, as AWS would be used.

The commit point is the manifest published with ``If-None-Match: *`` after its packs; the single writer
holds a lease object. Faults are real: a child process SIGKILLs itself inside the S3 client call that
uploads a pack or publishes a manifest; objects are damaged on the server; the endpoint goes away.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from waypoint import cli
from waypoint.checkpoint import CheckpointError, CheckpointManager, StoreLockedError
from waypoint.checkpoint.storage.remote import FsspecBackend, lease_key

LEASE = lease_key(7)  # a lease object another writer holds (generation 7)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"frozen": torch.arange(1000, dtype=torch.float32), "live": torch.randn(64, 64, generator=g), "step": step}


def test_a_run_saves_restores_verifies_and_collects_on_s3(bucket, s3fs_client):
    url = f"s3://{bucket}/runs/a/checkpoints"
    with CheckpointManager(url) as mgr:
        for step in (1, 2, 3):
            mgr.save(state(step), step=step, blocking=step != 3)
        assert mgr.gc(keep_last=1)["deleted"] == ["step_000000001", "step_000000002"]
    keys = s3fs_client.find(f"{bucket}/runs/a/checkpoints")
    assert sum(k.endswith("manifest.json") for k in keys) == 1
    assert sum(k.endswith(".safetensors") for k in keys) == 2  # step 3's new pack and the frozen tensor's pack
    with CheckpointManager(url, read_only=True) as reader:
        assert reader.verify() == {"step_000000003": []}
        got = reader.restore()
    assert got["step"] == 3 and torch.equal(got["live"], state(3)["live"])


def test_the_manifest_is_published_only_if_absent(bucket):
    backend = FsspecBackend(f"s3://{bucket}/p")
    backend.publish("step_000000001/manifest.json", b"first")
    with pytest.raises(FileExistsError):
        backend.publish("step_000000001/manifest.json", b"second")
    assert backend.read("step_000000001/manifest.json") == b"first"


def test_a_second_writer_on_the_prefix_is_refused_naming_the_holder(bucket):
    url = f"s3://{bucket}/shared"
    with CheckpointManager(url) as first:
        first.save(state(1), step=1)
        with pytest.raises(StoreLockedError, match=rf"pid {os.getpid()} on host {platform.node()}"):
            CheckpointManager(url)
        with CheckpointManager(url, read_only=True) as viewer:  # a reader asks who writes, without the lease
            assert viewer.lock_holder()["pid"] == os.getpid()
    with CheckpointManager(url) as again:  # released on close
        assert [i.step for i in again.list()] == [1]


def test_compressed_packs_on_s3_verify_and_restore_bit_exact(bucket):
    url = f"s3://{bucket}/runs/z/checkpoints"
    compressible = {"planes": torch.zeros(4096, dtype=torch.float32).add_(1.5), "step": 1}
    with CheckpointManager(url, compression="zstd") as mgr:
        mgr.save(compressible, step=1)
        assert sum(mgr.sizes("latest").packs.values()) < 4096 * 4  # stored smaller than the raw 16 KiB
    with CheckpointManager(url, read_only=True) as reader:
        assert reader.verify() == {"step_000000001": []}
        assert torch.equal(reader.restore()["planes"], compressible["planes"])
        with pytest.raises(CheckpointError, match="local checkpoints root"):
            reader.restore(mmap=True)


def test_a_lease_is_taken_over_only_once_it_expired_with_a_message(bucket, caplog):
    url = f"s3://{bucket}/leased"
    backend = FsspecBackend(url)
    live = {"pid": 1, "host": "node-17", "token": "x", "expires": time.time() + 300}
    backend.put(LEASE, json.dumps(live).encode())
    with pytest.raises(StoreLockedError, match="pid 1 on host node-17"):
        CheckpointManager(url)
    backend.put(LEASE, json.dumps({**live, "expires": time.time() - 5}).encode())
    with caplog.at_level(logging.WARNING, logger="waypoint.checkpoint.storage.remote"), CheckpointManager(url) as mgr:
        mgr.save(state(1), step=1)
    assert "took over the lease" in caplog.text and "node-17" in caplog.text and "expired" in caplog.text
    with CheckpointManager(url, read_only=True) as reader:
        assert reader.manifest("latest").generation == 8  # the next generation after the holder's


def test_a_lease_that_missed_its_renewals_is_waited_for_then_taken_over(bucket, caplog):
    url = f"s3://{bucket}/crashed-elsewhere"
    backend = FsspecBackend(url)
    expires = time.time() + 6  # renewed 24 s ago: it has missed two renewals (every ttl/3 = 10 s)
    crashed = {"pid": 1, "host": "node-18", "token": "y", "ttl_s": 30, "expires": expires}
    backend.put(LEASE, json.dumps(crashed).encode())
    with caplog.at_level(logging.WARNING, logger="waypoint.checkpoint.storage.remote"), CheckpointManager(url) as mgr:
        assert time.time() >= expires  # taken only once it expired
        mgr.save(state(1), step=1)
    assert "took over the lease" in caplog.text
    if "was not renewed; waiting" not in caplog.text:  # a machine slower than 6 s to get here found it expired already
        assert "expired" in caplog.text


def test_a_truncated_pack_is_found_by_verify_and_skipped_by_resume(bucket, s3fs_client):
    url = f"s3://{bucket}/damaged"
    with CheckpointManager(url) as mgr:
        mgr.save(state(1), step=1)
        mgr.save(state(2), step=2)
        packs = mgr.store.manifest("step_000000002")["packs"]
        own = [p for p in packs if p not in mgr.store.manifest("step_000000001")["packs"]]
    key = f"{bucket}/damaged/packs/{own[0]}"
    s3fs_client.pipe_file(key, s3fs_client.cat_file(key)[:-100])  # truncated on the server
    with CheckpointManager(url, read_only=True) as reader:
        report = reader.verify()
        assert report["step_000000001"] == [] and report["step_000000002"]
        with pytest.warns(UserWarning, match="skipping damaged checkpoint step_000000002"):
            got, info = reader.restore_with_info("latest")
    assert info.name == "step_000000001" and got["step"] == 1


def test_a_damaged_manifest_on_the_server_fails_verify_and_is_skipped_by_resume(bucket, s3fs_client, capsys):
    url = f"s3://{bucket}/flipped"
    with CheckpointManager(url) as mgr:
        mgr.save(state(1), step=1)
        mgr.save(state(2), step=2)
    key = f"{bucket}/flipped/step_000000002/manifest.json"
    raw = s3fs_client.cat_file(key)
    flipped = re.sub(rb'("step":\s*)2', rb"\g<1>3", raw, count=1)  # one byte: it no longer matches its checksum
    assert flipped != raw and len(flipped) == len(raw)
    s3fs_client.pipe_file(key, flipped)
    assert cli.main(["verify", url]) == 1
    assert "DAMAGED  step_000000002" in capsys.readouterr().out
    with CheckpointManager(url, read_only=True) as reader, pytest.warns(UserWarning, match="skipping damaged"):
        assert reader.restore_with_info("latest")[1].name == "step_000000001"


def test_the_cli_reads_urls(bucket, capsys, tmp_path):
    url = f"s3://{bucket}/cli-run"
    with CheckpointManager(f"{url}/checkpoints") as mgr:
        mgr.save(state(1), step=1)
        mgr.save(state(2), step=2)
    assert cli.main(["ls", url, "--json"]) == 0
    assert [c["name"] for c in json.loads(capsys.readouterr().out)] == ["step_000000001", "step_000000002"]
    assert cli.main(["verify", url]) == 0
    assert "2 of 2 checkpoints verify" in capsys.readouterr().out
    assert cli.main(["du", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["physical_bytes"] > 0
    assert cli.main(["show", f"{url}@step:1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 1
    assert cli.main(["diff", f"{url}@step:1", f"{url}@latest", "--json"]) == 0
    assert "live" in {row["key"] for row in json.loads(capsys.readouterr().out)["changed"]}
    assert cli.main(["export", f"{url}@latest", str(tmp_path / "w.safetensors"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tensors"] == 2
    assert cli.main(["gc", url, "--keep-last", "1"]) == 0
    capsys.readouterr()
    assert cli.main(["ls", url, "--json"]) == 0
    assert [c["name"] for c in json.loads(capsys.readouterr().out)] == ["step_000000002"]


def test_a_missing_bucket_is_one_sentence_and_exit_2(s3_env, capsys):
    assert cli.main(["ls", "s3://no-such-bucket-here/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err and "Traceback" not in err


def test_denied_access_is_one_sentence_and_exit_2(s3_env, s3_denying_endpoint, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_denying_endpoint)
    assert cli.main(["ls", "s3://some-bucket/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "waypoint: access to s3://some-bucket/run was denied (list); check the credentials in the environment"


@pytest.mark.slow
def test_train_with_a_missing_bucket_exits_2_in_one_sentence(s3_env, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(repo / "train.py"), "experiment=smoke", "checkpoint.root=s3://no-such-bucket-here/ck",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert "the bucket of s3://no-such-bucket-here/ck" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unreachable_endpoint_is_retried_then_reported(s3_env, monkeypatch, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WAYPOINT_STORAGE_RETRIES", "2")
    started = time.monotonic()
    assert cli.main(["ls", "s3://any-bucket/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "after 3 attempts" in err and err.count("\n") == 0
    assert time.monotonic() - started < 60  # bounded


KILLER = r"""
import os, signal, sys
import s3fs.core
import torch
from waypoint.checkpoint import CheckpointManager
sys.path.insert(0, os.path.dirname(os.environ["TESTS_CLUSTER"]))
from test_object_store import state
url, method, suffix = sys.argv[1:4]
with CheckpointManager(url) as mgr:
    mgr.save(state(1), step=1)
    orig = s3fs.core.S3FileSystem._call_s3
    async def call(self, m, *a, **kw):
        if m == method and kw.get("Key", "").endswith(suffix) and kw.get("PartNumber", 2) >= 2:  # mid-upload
            os.kill(os.getpid(), signal.SIGKILL)
        return await orig(self, m, *a, **kw)
    s3fs.core.S3FileSystem._call_s3 = call
    big = {"big": torch.randn(12_000_000)} if method == "upload_part" else {}  # 48 MB: above 2 parts, a multipart upload
    mgr.save({**state(2), **big}, step=2)
print("not killed")
"""


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("put_object", ".safetensors"),
        ("upload_part", ".safetensors"),
        ("put_object", "state.json"),
        ("put_object", "manifest.json"),
    ],
    ids=["during-pack-upload", "during-multipart-pack-upload", "before-manifest", "during-manifest-publish"],
)
def test_a_kill_during_an_s3_save_leaves_the_new_checkpoint_or_nothing(bucket, s3fs_client, method, suffix):
    url = f"s3://{bucket}/killed"
    env = {**os.environ, "TESTS_CLUSTER": __file__, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, url, method, suffix], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr
    with CheckpointManager(url, read_only=True) as reader:
        assert [i.name for i in reader.list()] == ["step_000000001"]
        assert reader.verify() == {"step_000000001": []}
    with CheckpointManager(url) as writer:  # the dead writer's lease (same host, process gone) is taken over
        writer.save(state(2), step=2)
        assert writer.verify() == {"step_000000001": [], "step_000000002": []}
    left = s3fs_client.find(f"{bucket}/killed")
    own = ("manifest.json", "state.json", "manifest.json.copy", "state.json.copy")  # the files and their spare copies
    assert not [k for k in left if "/step_" in k and not k.endswith(own)]
    assert len([k for k in left if k.endswith("state.json")]) == 2  # no orphan state file left behind
