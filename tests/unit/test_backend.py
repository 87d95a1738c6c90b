"""The storage backend contract, on a local directory and on fsspec's in-memory file system
(the S3 server runs the same operations in tests/cluster)."""

from __future__ import annotations

import uuid

import pytest
import torch

from waypoint.checkpoint import CheckpointManager, StoreLockedError
from waypoint.checkpoint.backend import BackendError, FsspecBackend, LocalBackend, backend_for, is_url
from waypoint.checkpoint.objstore import ObjectStore


@pytest.fixture(params=["local", "memory"])
def backend(request, tmp_path):
    if request.param == "local":
        return LocalBackend(tmp_path / "store")
    return FsspecBackend(f"memory://wp-{uuid.uuid4().hex[:8]}/store")


def test_put_read_range_list_delete(backend):
    backend.put("packs/a.safetensors", b"0123456789")
    backend.put("step_000000001/state.json", b"{}")
    assert backend.read("packs/a.safetensors") == b"0123456789"
    assert backend.read("packs/a.safetensors", 2, 3) == b"234"
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


def test_keys_cannot_leave_the_store(backend):
    with pytest.raises(ValueError):
        backend.put("../outside", b"x")


def test_capability_flags_tell_the_stores_apart(tmp_path):
    assert LocalBackend(tmp_path).caps.atomic_rename and LocalBackend(tmp_path).caps.direct_io
    remote = FsspecBackend("memory://caps/x").caps
    assert not remote.atomic_rename and remote.remote
    assert is_url("s3://b/p") and is_url("memory://x") and not is_url(tmp_path) and not is_url("file:///tmp/x")
    assert isinstance(backend_for("file:///tmp/x"), LocalBackend)


def test_the_object_store_protocol_runs_on_a_local_directory_too(tmp_path):
    """ObjectStore needs only the interface: on LocalBackend its lease is the POSIX lock of the store."""
    store = ObjectStore(LocalBackend(tmp_path / "objs"))
    try:
        info = store.commit({"w": torch.ones(3)}, {"w": {"__tensor__": "w"}}, step=1, epoch=None, metrics=None, tags=(), meta={})
        assert store.verify(info.name) == []
        with pytest.raises(StoreLockedError):
            ObjectStore(LocalBackend(tmp_path / "objs"))
    finally:
        store.close()
    assert sorted(p.name for p in (tmp_path / "objs").iterdir()) == ["LOCK", "index.json", "packs", "step_000000001"]


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
