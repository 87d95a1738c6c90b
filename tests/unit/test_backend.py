"""The storage backend contract, on a local directory and on fsspec's in-memory file system (the same
operations run on the S3 server in tests/cluster), and the one store on both."""

from __future__ import annotations

import os
import uuid

import pytest
import torch

from waypoint.checkpoint import CheckpointManager, StoreLockedError
from waypoint.checkpoint.storage import BackendError, LocalBackend, backend_for, is_url
from waypoint.checkpoint.storage.remote import FsspecBackend


@pytest.fixture(params=["local", "memory"])
def backend(request, tmp_path):
    if request.param == "local":
        b = LocalBackend(tmp_path / "store")
        b.create()
        return b
    return FsspecBackend(f"memory://wp-{uuid.uuid4().hex[:8]}/store")


def test_put_read_range_list_delete(backend):
    backend.put("packs/a.safetensors", b"0123456789")
    backend.put("step_000000001/state.json", b"{}")
    assert backend.read("packs/a.safetensors") == b"0123456789"
    assert backend.read("packs/a.safetensors", 2, 3) == b"234"
    with backend.open("packs/a.safetensors") as reader:
        assert reader.size == 10 and reader.read(7, 10) == b"789"
    assert backend.size("packs/a.safetensors") == 10 and backend.size("nope") is None
    assert backend.list("packs/") == {"packs/a.safetensors": 10}
    assert set(backend.list()) == {"packs/a.safetensors", "step_000000001/state.json"}
    backend.delete("packs/a.safetensors")
    backend.delete("packs/a.safetensors")  # absent is fine
    assert backend.list("packs/") == {}
    with pytest.raises(FileNotFoundError):
        backend.read("packs/a.safetensors")


def test_publish_only_if_absent_and_replace(backend):
    backend.publish("step_000000001/manifest.json", b"one")
    with pytest.raises(FileExistsError):
        backend.publish("step_000000001/manifest.json", b"two")
    assert backend.read("step_000000001/manifest.json") == b"one"
    backend.replace("step_000000001/manifest.json", b"three")
    assert backend.read("step_000000001/manifest.json") == b"three"


def test_a_directory_is_published_whole_and_never_over_another(backend):
    backend.publish_dir("step_000000001", [("state.json", b"{}"), ("manifest.json", b"m")])
    assert backend.list("step_000000001/") == {"step_000000001/state.json": 2, "step_000000001/manifest.json": 1}
    with pytest.raises(FileExistsError):
        backend.publish_dir("step_000000001", [("state.json", b"other"), ("manifest.json", b"other")])
    assert backend.read("step_000000001/state.json") == b"{}"
    backend.remove_dir("step_000000001", "manifest.json")
    assert backend.list("step_000000001/") == {}


def test_a_new_object_is_invisible_until_committed(backend):
    obj = backend.new_object("packs/")
    os.pwrite(obj.fd, b"abc", 0)
    assert backend.list("packs/") == {}
    obj.commit("packs/p.safetensors")
    assert backend.read("packs/p.safetensors") == b"abc"
    dropped = backend.new_object("packs/")
    os.pwrite(dropped.fd, b"xyz", 0)
    dropped.abort()
    assert backend.list("packs/") == {"packs/p.safetensors": 3}


def test_keys_cannot_leave_the_store(backend):
    with pytest.raises(ValueError):
        backend.put("../outside", b"x")


def test_each_new_lease_holder_gets_a_higher_generation(backend):
    first = backend.lease()
    first.release()
    second = backend.lease()
    try:
        assert second.generation == first.generation + 1
        assert backend.holder()["generation"] == second.generation
    finally:
        second.release()


def test_capabilities_tell_the_store_what_each_backend_promises(tmp_path):
    local, remote = LocalBackend(tmp_path).caps, FsspecBackend("memory://caps/x").caps
    assert local.atomic_rename and local.mmap and local.lease == "lock" and not local.remote
    assert not remote.atomic_rename and not remote.mmap and remote.lease == "expiring" and remote.ranged_reads
    assert is_url("s3://b/p") and is_url("memory://x") and not is_url(tmp_path) and not is_url("file:///tmp/x")
    assert isinstance(backend_for("file:///tmp/x"), LocalBackend)


def test_the_one_store_locks_saves_and_lists_the_same_on_both_backends(backend):
    with CheckpointManager(backend) as mgr:
        info = mgr.save({"w": torch.ones(3), "n": 1}, step=1)
        assert mgr.verify() == {info.name: []}
        with pytest.raises(StoreLockedError):
            CheckpointManager(backend_for(backend.url))
    keys = set(backend.list())
    assert {"FENCE", "index.json", f"{info.name}/manifest.json", f"{info.name}/state.json"} <= keys
    assert any(k.startswith("packs/") and k.endswith("-g1.safetensors") for k in keys)


def test_a_manager_on_a_memory_url_round_trips():
    url = f"memory://wp-{uuid.uuid4().hex[:8]}/run/checkpoints"
    with CheckpointManager(url) as mgr:
        info = mgr.save({"w": torch.arange(4.0), "n": 3}, step=3)
        assert mgr.checkpoint_files(info.name) == []  # objects, not local files: a tracker records the checkpoint only
    with CheckpointManager(url, read_only=True) as reader:
        got = reader.restore()
    assert got["n"] == 3 and torch.equal(got["w"], torch.arange(4.0))


def test_an_unknown_protocol_is_one_sentence():
    with pytest.raises(BackendError, match="unknown storage protocol 'nosuchfs://'"):
        FsspecBackend("nosuchfs://x/y")


def test_free_space_is_known_on_a_local_disk_and_unknown_on_an_object_store(backend):
    backend.create()
    free = backend.free_bytes()
    assert (free is None) if backend.url.startswith("memory://") else (isinstance(free, int) and free > 0)
