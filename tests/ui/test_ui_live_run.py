"""The interface as real processes: beside a training run (reads without the lock, refuses to write, training
finishes), and listening on a public address (nothing answers before login). Slow: make test-all."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from trainkit import committed, start_train

from waypoint.ui import ActionRefusedError, actions, detail, runs
from waypoint.ui.catalog import Catalog


@pytest.mark.slow
def test_a_run_training_under_the_ui_keeps_training_while_reads_refresh_and_writes_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    run = root / "stackwise" / "live"
    root.mkdir()
    catalog = Catalog([root])
    proc = start_train(run, "model=stackwise", "trainer.max_epochs=6", "checkpoint=all")
    try:
        deadline = time.monotonic() + 240
        while len(committed(run)) < 1:
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
            time.sleep(0.05)
        seen, refused = set(), 0
        while proc.poll() is None:
            (row,) = [r for r in runs.runs_table(catalog) if r["run"] == "outputs/stackwise/live"]
            names = [r[0] for r in detail.run_view(catalog, "outputs/stackwise/live")["rows"]]
            seen.add(len(names))
            if row["status"] == "running":
                assert f"pid {proc.pid}" in row["note"]
                try:
                    actions.tag(catalog, "outputs/stackwise/live", "latest", "mine")
                except ActionRefusedError as exc:
                    assert "already being written" in str(exc)
                    refused += 1
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
    assert proc.returncode == 0, out[-3000:]
    assert refused >= 1 and len(seen) >= 2  # new checkpoints appeared while it trained
    (row,) = runs.runs_table(catalog)
    assert row["status"] == "finished" and row["steps"] == 48
    assert "mine" not in ",".join(r[3] for r in detail.run_view(catalog, "outputs/stackwise/live")["rows"])


@pytest.mark.slow
def test_a_ui_on_a_public_address_answers_nothing_before_login(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "waypoint",
            "ui",
            str(tmp_path),
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--auth",
            "alice:s3cret",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    try:
        line = proc.stdout.readline()
        assert "listening on 0.0.0.0, login required" in line, line + proc.stdout.read() if proc.poll() is not None else line
        base = f"http://127.0.0.1:{port}"
        for path in ("/config", "/gradio_api/info"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path, timeout=30)
            assert refused.value.code == 401
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/login", data=urllib.parse.urlencode({"username": "alice", "password": "no"}).encode())
        ok = urllib.request.urlopen(
            base + "/login", data=urllib.parse.urlencode({"username": "alice", "password": "s3cret"}).encode()
        )
        assert ok.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
