"""Where `waypoint ui` may listen, what it needs installed, and a training process it must not disturb."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from uikit import make_run

from waypoint.checkpoint import CheckpointManager
from waypoint.cli import main
from waypoint.ui import ActionRefusedError, UnsafeBindError, actions, runs
from waypoint.ui.catalog import Catalog
from waypoint.ui.serve import EXTRA_HINT, check_bind, launch_options

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_login(host: str) -> None:
    assert check_bind(host, None) == (host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])
def test_any_other_host_is_refused_without_auth_and_accepted_with_it(host: str) -> None:
    with pytest.raises(UnsafeBindError, match="without authentication"):
        check_bind(host, None)
    assert check_bind(host, "alice:s3cret") == (host, ("alice", "s3cret"))


@pytest.mark.parametrize("auth", ["alice", "alice:", ":pw", ""])
def test_malformed_auth_is_refused(auth: str) -> None:
    with pytest.raises(UnsafeBindError, match="user:password"):
        check_bind("0.0.0.0", auth)


def test_launch_never_shares_and_serves_no_file_of_the_roots(tmp_path: Path) -> None:
    opts = launch_options("127.0.0.1", 7000, None, [tmp_path])
    assert opts["share"] is False and opts["allowed_paths"] == [] and opts["blocked_paths"] == [str(tmp_path)]
    assert opts["mcp_server"] is False and opts["max_file_size"] == "1kb"


def test_the_command_refuses_a_public_host_without_auth_before_starting_anything(tmp_path: Path, capsys) -> None:
    assert main(["ui", str(tmp_path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without authentication" in err and "--auth user:password" in err


def test_the_command_refuses_a_root_that_is_not_a_directory(tmp_path: Path, capsys) -> None:
    assert main(["ui", str(tmp_path / "missing"), "--port", "1"]) == 2
    assert "missing is not a directory" in capsys.readouterr().err


def test_without_gradio_one_sentence_names_the_extra(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import importlib.util, sys
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "gradio" else real(name, *a)
        from waypoint.cli import main
        sys.exit(main(["ui", sys.argv[1]]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"waypoint: {EXTRA_HINT}" and "'ui' extra" in EXTRA_HINT and "\n" not in proc.stderr.strip()


HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from waypoint.checkpoint import CheckpointManager
    with CheckpointManager(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()
    """
)


def test_a_run_training_in_another_process_shows_running_and_write_actions_change_nothing(tmp_path: Path) -> None:
    run = make_run(tmp_path / "outputs" / "toy" / "live")
    catalog = Catalog([tmp_path / "outputs"])
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run / "checkpoints")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        (row,) = runs.runs_table(catalog)
        assert row["status"] == "running" and f"pid {child.pid}" in row["note"]
        with pytest.raises(ActionRefusedError, match=f"already being written by pid {child.pid}"):
            actions.tag(catalog, "outputs/toy/live", "latest", "mine")
        assert actions.verify(catalog, "outputs/toy/live")[-1]["ok"]  # reads go on: no lock taken
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    with CheckpointManager(run / "checkpoints", read_only=True) as mgr:
        assert "mine" not in mgr.one("latest").tags
    assert runs.runs_table(catalog)[0]["status"] == "finished"
    assert actions.tag(catalog, "outputs/toy/live", "latest", "mine").endswith("tags [end,mine]")


def test_without_roots_it_shows_this_projects_outputs_and_multirun_or_says_there_are_none(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from waypoint.ui.serve import default_roots

    monkeypatch.chdir(tmp_path)
    assert main(["ui"]) == 2
    assert "no outputs/ or multirun/ here" in capsys.readouterr().err
    (tmp_path / "multirun").mkdir()
    assert default_roots() == [Path("multirun")]
