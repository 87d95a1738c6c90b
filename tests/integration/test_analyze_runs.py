"""analyze.py, `make analyze` and `waypoint compare` on real runs in a project directory as a user has one.

The project holds what train.py itself names: a single run with a non-default override (``outputs/dino/
experiment=smoke``), a ``-m`` sweep over seeds and learning rates (``multirun/universeg/experiment=smoke,
model.lr=0.002,0.004,seed=0,1`` and its job dirs), and a copy of the run under a path with spaces, quotes,
commas, ``=`` and HTML. Every report opens in the system's headless Chromium with no console error.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from trainkit import REPO

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
SWEEP = "multirun/universeg/experiment=smoke,model.lr=0.002,0.004,seed=0,1"
ODD = 'outputs/dino/my runs/it\'s "quoted", <img src=x onerror=alert(1)>, a=b'
CHROMIUM = "/usr/bin/chromium"


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**ENV, "PATH": f"{cwd / '.venv' / 'bin'}{os.pathsep}{ENV.get('PATH', '')}"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project directory (the repository's entry points linked in) holding train.py's own run and sweep dirs."""
    root = tmp_path_factory.mktemp("project")
    for name in ("Makefile", "analyze.py", "train.py", "conf", ".venv", "pyproject.toml"):
        (root / name).symlink_to(REPO / name)
    python = str(root / ".venv" / "bin" / "python")
    ok(run([python, "train.py", "experiment=smoke"], root))
    sweep = ["-m", "model=universeg", "experiment=smoke", "seed=0,1", "model.lr=0.002,0.004", "trainer.max_steps=4"]
    ok(run([python, "train.py", *sweep], root))
    shutil.copytree(root / "outputs" / "dino" / "experiment=smoke", root / ODD)
    return root


def analyze(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run([str(project / ".venv" / "bin" / "python"), "analyze.py", *args], project)


def make_analyze(project: Path, target: str) -> subprocess.CompletedProcess:
    return run(["make", "-s", "-o", ".venv/.installed", "analyze", f"RUN={target}"], project)


def shapes(project: Path) -> dict[str, Path]:
    jobs = sorted(p for p in (project / SWEEP).iterdir() if (p / "checkpoints").is_dir())
    assert len(jobs) == 4, jobs
    return {"run": project / "outputs/dino/experiment=smoke", "sweep": project / SWEEP, "job": jobs[-1], "odd": project / ODD}


@pytest.fixture(scope="module")
def reports(project: Path) -> dict[str, Path]:
    """analyze.py on the run and the sweep, `make analyze` on a sweep job and on the odd path; their report dirs."""
    found = shapes(project)
    for shape in ("run", "sweep"):
        proc = ok(analyze(project, str(found[shape])))
        assert str(found[shape] / "report") in proc.stdout, proc.stdout
    for shape in ("odd", "job"):
        ok(make_analyze(project, str(found[shape].relative_to(project))))
    return {shape: path / "report" for shape, path in found.items()}


def test_every_run_and_sweep_directory_the_project_creates_gets_a_report(reports: dict[str, Path]) -> None:
    for shape, report in reports.items():
        html = (report / "report.html").read_text()
        assert html.count("<img ") == html.count("src='data:image/png;base64,") >= 2, shape


def test_the_run_report_leads_with_the_metric_beside_its_baselines_then_loss_lr_and_teacher_entropy(reports) -> None:
    md = (reports["run"] / "report.md").read_text()
    assert md.startswith("# DINO · experiment=smoke\n\n## Result\n")
    assert re.search(
        r"val/knn_top1: final [0-9.]+ \(step 16\), best [0-9.]+ \(step \d+\); baselines: raw_pixels [0-9.]+, untrained", md
    )
    assert "Ranked by importance: val/knn_top1, train/loss, train/lr, train/teacher_entropy," in md
    assert re.search(r"No collapse: train/collapsed stayed 0 over \d+ logged steps", md)
    order = [
        md.index(h) for h in ("## Result", "## Key metrics", "## DINO: embedding", "## All metrics", "## Parameter evolution")
    ]
    assert order == sorted(order)
    numbers = re.findall(r"(?<![\w.])(\d+\.\d+)(?!\w|\.\d)", md)
    assert numbers and all(len(n.replace(".", "").lstrip("0")) <= 4 for n in numbers), "more than 4 significant digits"


def test_parameter_evolution_runs_from_the_initial_weights_at_step_0_to_the_end(reports) -> None:
    md = (reports["run"] / "report.md").read_text()
    table = md[md.index("## Parameter evolution") :].split("\n\n")[2].splitlines()
    assert table[0].startswith("| step | snapshot | student norm | student update vs previous | student cosine to final |")
    assert table[2].startswith("| 0 | initial |") and table[-1].startswith("| 16 | step_000000016 |")


def test_the_rebuilt_initial_weights_are_the_runs_own(project: Path, reports) -> None:
    """The kNN top-1 the report recomputes for step 0 is the one the run logged for its untrained network."""
    md = (reports["run"] / "report.md").read_text()
    recomputed = float(re.search(r"\| step 0 \(initial\) \| 0 \| ([0-9.]+) \|", md).group(1))
    rows = [json.loads(line) for line in (project / "outputs/dino/experiment=smoke/metrics.jsonl").read_text().splitlines()]
    logged = next(r["val/knn_top1_untrained"] for r in rows if "val/knn_top1_untrained" in r)
    assert recomputed == pytest.approx(logged, abs=5e-4)
    for png in ("dino_embedding.png", "dino_attention.png", "metrics.png", "evolution.png", "timeline.png"):
        assert (reports["run"] / png).stat().st_size > 5000, png


def test_a_universeg_job_report_draws_query_support_prediction_and_ground_truth(reports) -> None:
    md = (reports["job"] / "report.md").read_text()
    assert "## UniverSeg: held-out episodes" in md and "| episode | task | Dice | baseline mean_mask Dice |" in md
    assert (reports["job"] / "universeg_episodes.png").stat().st_size > 10000


def test_a_universeg_report_draws_dice_against_support_set_size_beside_the_baselines(reports) -> None:
    md = (reports["job"] / "report.md").read_text()
    section = md.split("## UniverSeg: Dice against support-set size", 1)[1].split("\n## ", 1)[0]
    sizes = re.findall(r"^\| (\d+) \| \d+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$", section, flags=re.M)
    assert sizes == ["1", "2", "4", "8", "16"]
    assert (reports["job"] / "universeg_support_size.png").stat().st_size > 10000


def test_a_sweep_report_shows_mean_and_std_per_learning_rate_beside_the_baselines(reports) -> None:
    md = (reports["sweep"] / "report.md").read_text()
    assert md.startswith("# UniverSeg sweep · experiment=smoke,model.lr=0.002,0.004,seed=0,1\n")
    assert "4 UniverSeg runs in 2 groups, grouped by model.lr; seeds aggregated." in md
    for lr in ("0.002", "0.004"):
        assert re.search(
            rf"\| model.lr={lr} \| 2 \| 0, 1 \| [0-9.]+ (± [0-9.]+ )?\(n=2\) \|.*mean_mask_dice [0-9.]+, threshold_dice", md
        )
    assert "| run | model.lr | seed |" in md and md.count("finished") == 4


def test_analyze_with_no_argument_reports_on_the_newest_run(project: Path, reports) -> None:
    newest = reports["odd"].parent
    (newest / "metrics.jsonl").touch()
    assert f"report: {(newest / 'report' / 'report.html').relative_to(project)} " in ok(analyze(project, "pictures=false")).stdout


def test_a_path_that_is_not_a_directory_is_refused_in_one_sentence(project: Path) -> None:
    proc = analyze(project, "outputs/dino/model=typo,seed=1")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "outputs/dino/model=typo,seed=1 is not a directory" in proc.stderr


def test_waypoint_compare_writes_one_report_and_refuses_runs_of_two_families(project: Path, reports) -> None:
    waypoint = str(project / ".venv" / "bin" / "waypoint")
    proc = ok(run([waypoint, "compare", SWEEP, "--out", "cmp", "--json"], project))
    doc = json.loads(proc.stdout)
    assert [g["label"] for g in doc["groups"]] == ["model.lr=0.002", "model.lr=0.004"]
    assert (project / "cmp" / "report.html").is_file()
    mixed = run([waypoint, "compare", "outputs/dino/experiment=smoke", SWEEP], project)
    assert mixed.returncode == 2 and mixed.stderr.count("\n") == 1
    assert "runs of different families cannot be compared" in mixed.stderr


def examples(doc: Path) -> list[str]:
    """Every analyze and compare command in a document's code blocks (comments cut)."""
    lines, inside = [], False
    for line in doc.read_text().splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line.split(" #")[0].strip())
    return [line for line in lines if re.match(r"^(make analyze|\S*python\S* analyze\.py|\S*waypoint compare)\b", line)]


def run_examples(project: Path, doc: Path) -> None:
    """Run each example in the project; a run directory it names that does not exist is a copy of a run of that family."""
    found = examples(doc)
    assert found, f"{doc.name} shows no analyze command"
    with_checkpoints = {"dino": project / "outputs/dino/experiment=smoke", "universeg": shapes(project)["job"]}
    for example in found:
        for token in shlex.split(example):
            path = token.split("=", 1)[1] if token.startswith("RUN=") else token
            family = path.split("/")[1] if path.startswith(("outputs/", "multirun/")) and path.count("/") >= 2 else None
            if family in with_checkpoints and not (project / path).exists():
                shutil.copytree(with_checkpoints[family], project / path)
        example = re.sub(r"step:\d+", "step:8", example)  # the smoke runs' first checkpoint
        proc = run(["bash", "-c", example], project)
        assert proc.returncode == 0, f"{example}\n{proc.stdout[-1500:]}{proc.stderr[-2500:]}"


def test_every_analyze_example_in_the_readme_runs(project: Path, reports) -> None:
    run_examples(project, REPO / "README.md")


@pytest.mark.slow  # ~80 s: seven reports
def test_every_example_in_the_analysis_guide_runs(project: Path, reports) -> None:
    run_examples(project, REPO / "docs" / "analysis.md")


PROBE = """e => new Promise(done => { const imgs = [...document.images];
  done({images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length}); })"""


def test_every_report_opens_in_headless_chromium_with_no_console_error(project: Path, reports) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser check needs playwright (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        pytest.skip("the browser check needs the system Chromium at /usr/bin/chromium (apt-get install chromium)")
    if not (project / "cmp" / "report.html").exists():
        ok(run([str(project / ".venv" / "bin" / "waypoint"), "compare", SWEEP, "--out", "cmp"], project))
    pages = [*(r / "report.html" for r in reports.values()), project / "cmp" / "report.html"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.route(
            "**/*",
            lambda r: (
                r.continue_() if r.request.url.startswith(("file:", "data:")) else (problems.append(r.request.url), r.abort())
            ),
        )
        for html in pages:
            page.goto(html.as_uri())
            counts = page.evaluate(PROBE)
            assert counts["images"] >= 2 and counts["loaded"] == counts["images"], (html, counts)
            assert page.locator("h1").inner_text().strip(), html
        browser.close()
    assert problems == []


@pytest.mark.slow  # ~40 s: a Stack-Wise run of its own
def test_a_stackwise_report_shows_bits_per_byte_and_samples_after_each_stack(project: Path) -> None:
    ok(run([str(project / ".venv" / "bin" / "python"), "train.py", "model=stackwise", "experiment=smoke"], project))
    report = project / "outputs/stackwise/experiment=smoke/report"
    ok(analyze(project, str(report.parent)))
    md = (report / "report.md").read_text()
    assert "Ranked by importance: val/bpb, train/loss, train/lr, train/bpb, train/stacks," in md
    assert re.search(r"val/bpb at the end of each stack's phase: 1 stack [0-9.]+, 2 stacks [0-9.]+", md)
    assert re.search(r"\| after stack \| bits per byte \| sample \|\n\|---\|---\|---\|\n\| 1 \| [0-9.]+ \| .+\n\| 2 \|", md)
    assert (report / "stackwise_bpb.png").stat().st_size > 5000 and (report / "stacks.png").stat().st_size > 5000
