"""`waypoint ui` in a real headless Chromium (Playwright, the system browser) over real smoke runs of train.py.

One UI process serves the module's runs on a free port; the tests share one page (a test that must watch a page
load opens its own). Nothing is fetched from the network: requests to anything but the UI are aborted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from browserkit import CHROMIUM, launch_chromium, open_run, open_ui, pick, start_ui, stop_ui, ui_url
from safetensors.torch import load_file
from trainkit import REPO, run_train

from waypoint.checkpoint import CheckpointManager
from waypoint.cli import main

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (pip install -e '.[dev]')")
if importlib.util.find_spec("gradio") is None:  # looked up, not imported: the UI runs in its own process
    pytest.skip("the web interface needs the ui extra (pip install -e '.[ui]')", allow_module_level=True)

ROWS = """e => [...e.querySelectorAll('[role=row][data-index]')]
  .map(r => [...r.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()))"""
RUN, DAMAGED = "outputs/stackwise/run", "outputs/stackwise/damaged"
# a run and a note named like markup: shown as the text they are, and no script of theirs runs
MARKUP = "outputs/stackwise/<img src=x onerror=alert(1)> **bold** _it_"
NOTE = "<img src=x onerror=alert(2)> **note** [link](x)"


def flip_a_tensor_byte(run: Path) -> str:
    """Flip one byte of the newest checkpoint's last-stored tensor; returns that tensor's state key."""
    with CheckpointManager(run / "checkpoints", read_only=True) as mgr:
        tensors = mgr.manifest("latest").tensors
    key, entry = max(tensors.items(), key=lambda kv: kv[1].nbytes)
    pack = run / "checkpoints" / "packs" / entry.pack
    data = bytearray(pack.read_bytes())
    owners = [k for k, e in tensors.items() if e.pack == entry.pack]
    data[-1] ^= 0x01  # the pack's last bytes belong to the tensor written last
    pack.write_bytes(bytes(data))
    with CheckpointManager(run / "checkpoints", read_only=True) as mgr:
        problems = mgr.verify_one("latest")
    assert problems, "the flipped byte was not detected"
    return next(k for k in owners if tensors[k].id[:9] in " ".join(problems))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("ui") / "outputs"
    run = root / "stackwise" / "run"
    root.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc, lines = start_ui([root], REPO, env)  # starts while the run trains: the UI lists runs afresh on every page load
    try:
        run_train(run, "model=stackwise", "checkpoint=all")
        shutil.copytree(run, root / "stackwise" / "damaged")
        damaged_key = flip_a_tensor_byte(root / "stackwise" / "damaged")
        markup = shutil.copytree(run, root.parent / MARKUP)
        with CheckpointManager(markup / "checkpoints") as mgr:
            mgr.tag("step_000000008", "noted", note=NOTE)
        yield {"url": ui_url(proc, lines), "root": root, "run": run, "damaged_key": damaged_key, "log": lines}
    finally:
        stop_ui(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.skip("the browser tests need the system Chromium at /usr/bin/chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, served: dict):
    """One page for the module (loading Gradio costs seconds); each test opens the tab it needs."""
    page = open_ui(browser, served["url"], RUN)
    yield page
    page.context.close()


def table(page, elem_id: str) -> list[list[str]]:
    return page.locator(f"#{elem_id}").evaluate(ROWS)


def pick_one_more(page, elem_id: str, option: str) -> None:
    """Add ``option`` to a multiselect (typing its checkpoint name first keeps the list short and still)."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} input").press_sequentially(option.rsplit("@", 1)[-1])
    page.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")


def message(page, elem_id: str = "act-message"):
    return sync_api.expect(page.locator(f"#{elem_id} textarea"))


def ls_json(run: Path) -> list[dict]:
    """What ``waypoint ls RUN --json`` prints (its entry point, in this process: no second torch import)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["ls", str(run), "--json"]) == 0
    return json.loads(out.getvalue())


def act_on(page, run_id: str, checkpoint: str) -> None:
    page.get_by_role("tab", name="Act").click()
    pick(page, "act-run", run_id)
    sync_api.expect(page.locator("#act-commands")).to_contain_text("resume")  # the run's checkpoints are loaded
    pick(page, "act-ckpt", checkpoint)


def test_the_runs_list_shows_each_run_with_model_status_and_steps(page) -> None:
    page.get_by_role("tab", name="Runs").click()
    rows = {r[0]: r for r in table(page, "runs-table")}
    assert set(rows) == {RUN, DAMAGED, MARKUP}
    assert rows[RUN][2:6] == ["stackwise", rows[RUN][3], "finished", "16"] and "model=stackwise" in rows[RUN][3]


def test_opening_a_run_shows_the_checkpoint_table_waypoint_ls_prints_and_marked_curves(page, served: dict) -> None:
    page.get_by_role("tab", name="Runs").click()
    index = [r[0] for r in table(page, "runs-table")].index(RUN)
    page.locator(f"#runs-table [data-testid=cell-{index}-0]").click()
    sync_api.expect(page.locator("#tab-run-button")).to_have_attribute("aria-selected", "true")
    sync_api.expect(page.locator("#run-summary")).to_contain_text("checkpoint(s)")
    listed = ls_json(served["run"])
    shown = table(page, "ckpt-table")
    assert [(r[0], int(r[1]), int(r[2]), r[3], r[7]) for r in shown] == [
        (c["name"], c["step"], c["epoch"], ",".join(c["tags"]), "yes") for c in listed
    ]
    marks = page.locator("#run-metric-chart circle.marker title").all_text_contents()
    assert [m.split()[0] for m in marks] == [c["name"] for c in listed]
    assert "tags [best,end,latest]" in marks[-1]
    open_run(page, RUN, "train/loss")  # any logged metric, the checkpoints marked on its curve too
    assert page.locator("#run-metric-chart circle.marker").count() == len(listed)


def test_comparing_two_checkpoints_shows_metrics_and_per_module_change(page) -> None:
    page.get_by_role("tab", name="Compare").click()
    pick(page, "compare-select", f"{RUN}@step_000000008")
    pick(page, "compare-select", f"{RUN}@step_000000016")
    page.locator("#compare-button").click()
    sync_api.expect(page.locator("#compare-summary")).to_contain_text("tensors changed")
    metrics = {r[0]: r[1:] for r in table(page, "compare-metrics")}
    assert "val/bpb" in metrics and metrics["val/bpb"][0] != metrics["val/bpb"][1]
    modules = table(page, "compare-modules")
    moved = [r for r in modules if float(r[4]) > 0]
    assert moved and all(-1.0 <= float(r[5]) <= 1.0 for r in moved)


def test_names_and_notes_like_markup_show_as_text_and_run_no_script(browser, served: dict) -> None:
    dialogs: list[str] = []
    page = open_ui(browser, served["url"], RUN, dialogs)
    try:
        assert MARKUP in [r[0] for r in table(page, "runs-table")]
        page.get_by_role("tab", name="Run", exact=True).click()
        pick(page, "run-select", MARKUP)
        sync_api.expect(page.locator("#ckpt-table")).to_contain_text(NOTE)
        page.get_by_role("tab", name="Compare").click()
        pick_one_more(page, "compare-select", f"{MARKUP}@step_000000008")
        pick_one_more(page, "compare-select", f"{MARKUP}@step_000000016")
        page.locator("#compare-button").click()
        summary = page.locator("#compare-summary")
        sync_api.expect(summary).to_contain_text(f"{MARKUP}@step_000000008 -> {MARKUP}@step_000000016: ")
        assert summary.locator("img, strong, em, a, code").count() == 0
        assert page.locator("img[src='x']").count() == 0 and dialogs == []
    finally:
        page.context.close()


def test_a_tag_set_in_the_browser_shows_in_waypoint_ls(page, served: dict) -> None:
    act_on(page, RUN, "step_000000008")
    page.locator("#act-tag input, #act-tag textarea").first.fill("ui-pick")
    page.locator("#act-note input, #act-note textarea").first.fill("chosen in the browser")
    page.locator("#act-tag-button").click()
    message(page).to_have_value(re.compile(r"step_000000008: tags \[.*ui-pick"))
    tags = {c["name"]: c["tags"] for c in ls_json(served["run"])}
    assert "ui-pick" in tags["step_000000008"]


def test_verify_names_the_damaged_tensor(page, served: dict) -> None:
    act_on(page, DAMAGED, "latest")
    page.locator("#act-verify-button").click()
    message(page, "act-verify-out").to_have_value(re.compile("checkpoints verify"))
    text = page.locator("#act-verify-out textarea").input_value()
    assert "DAMAGED  step_000000016" in text and f"damaged tensors: {served['damaged_key']}" in text


def test_deleting_best_is_refused_and_deletes_nothing(page, served: dict) -> None:
    before = ls_json(served["run"])
    act_on(page, RUN, "best")
    page.locator("#act-confirm input").check()
    page.locator("#act-rm-button").click()
    message(page).to_have_value(re.compile("not deleted: step_000000016 is best"))
    assert ls_json(served["run"]) == before


def test_export_downloads_only_the_part_asked_for(page, served: dict, tmp_path: Path) -> None:
    act_on(page, RUN, "best")
    page.locator("#act-part input, #act-part textarea").first.fill("task/rack/head")
    page.locator("#act-export-button").click()
    message(page).to_have_value(re.compile("exported .* of step_000000016"))
    with page.expect_download() as download:
        page.locator("#act-export-file a").first.click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name == "run-step_000000016-task-rack-head.safetensors"
    with CheckpointManager(served["run"] / "checkpoints", read_only=True) as mgr:
        wanted = sorted(
            k.removeprefix("task/rack/head").lstrip("/.") for k in mgr.manifest("best").tensors if k.startswith("task/rack/head")
        )
    assert sorted(load_file(path)) == [k.replace("/", ".") for k in wanted]


def test_the_server_hands_out_no_file_of_the_roots_or_beyond(served: dict) -> None:
    for path in (served["run"] / "metrics.jsonl", served["run"] / "checkpoints" / "index.json", Path("/etc/passwd")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{served['url'].rstrip('/')}/gradio_api/file={path}", timeout=30)
        assert refused.value.code in (403, 404)
