"""Real components for the cluster tests: a moto S3 server on 127.0.0.1 (a free port), talked to through
s3fs exactly as AWS would be (credentials and endpoint from the environment only)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAULTS = HERE.parent / "faults"
for p in (HERE, FAULTS):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL_S3": endpoint,
    }


def _moto(tmp_path_factory, **env: str):
    """Start ``python -m moto.server`` on 127.0.0.1 on a free port; yields its endpoint (skips if it cannot start)."""
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the S3 tests need moto[server] and s3fs (pip install -e '.[dev]'): {exc}")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"moto's S3 server exited at start: {log.read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.skip("moto's S3 server did not start within 30 s")
    yield endpoint
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """``http://127.0.0.1:<port>`` of a moto S3 server started for this session (skipped if it cannot start)."""
    yield from _moto(tmp_path_factory)


@pytest.fixture(scope="session")
def s3_denying_endpoint(tmp_path_factory):
    """A moto S3 server that checks credentials (IAM on from the first request): the test keys are refused."""
    yield from _moto(tmp_path_factory, INITIAL_NO_AUTH_ACTION_COUNT="0")


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """The AWS_* environment of the moto server, set for this process and inherited by child processes."""
    env = _s3_env(s3_endpoint)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def bucket(s3_env):
    """A fresh, empty bucket on the moto server; its name."""
    import s3fs

    name = f"wp-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    return name


@pytest.fixture
def s3fs_client(s3_env):
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)
