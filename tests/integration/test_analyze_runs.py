"""analyze.py on real smoke runs: every plot, a self-contained HTML report, comparisons and sweep tables."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from trainkit import REPO, SMOKE, run_train

PLOTS = ["metrics.png", "timeline.png", "storage.png", "evolution.png"]
EXTRA = {"dino": "student_teacher.png", "stackwise": "stacks.png", "universeg": None}


def analyze(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "analyze.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run_of(tmp_path_factory: pytest.TempPathFactory):
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = tmp_path_factory.mktemp(family) / "run"
            run_train(cache[family], f"model={family}", "trainer.max_epochs=3", "checkpoint=all")
        return cache[family]

    return get


# DINO (baselines and collapse lines) in make test; the other families in make test-all
@pytest.mark.parametrize("family", [f if f == "dino" else pytest.param(f, marks=pytest.mark.slow) for f in EXTRA])
def test_the_report_has_every_plot_and_a_self_contained_html(run_of, family: str) -> None:
    run = run_of(family)
    analyze(f"run={run}", "compare.a=step:8", "compare.b=latest")
    report = run / "report"
    expected = PLOTS + ["compare.png"] + ([EXTRA[family]] if EXTRA[family] else [])
    for name in expected:
        assert (report / name).stat().st_size > 1000, f"{name} missing or empty"
    html = (report / "report.html").read_text()
    images = re.findall(r"<img [^>]*src=['\"]([^'\"]+)", html)
    assert len(images) >= len(expected) and all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in html and "https://" not in html
    md = (report / "report.md").read_text()
    assert "Comparison step_000000008" in md
    if family == "dino":  # the baselines DINO logs at its first validation stand beside its final kNN figure
        assert re.search(r"Final val/knn_top1 [0-9.]+; baselines: raw_pixels [0-9.]+, untrained [0-9.]+", md)
    summary = json.loads((report / "summary.json").read_text())
    assert summary


def test_make_analyze_picks_the_newest_run_under_outputs(run_of, tmp_path: Path) -> None:
    shutil.copytree(run_of("universeg"), tmp_path / "outputs" / "universeg" / "default")
    proc = analyze(cwd=tmp_path)
    assert "outputs/universeg/default/report/report.html" in proc.stdout


def test_a_sweep_dir_gets_a_job_table_and_overlaid_curves(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = tmp_path / "sweep"
    subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "model=universeg", *SMOKE, "seed=0,1", f"hydra.sweep.dir={sweep}"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    analyze(f"run={sweep}")
    md = (sweep / "report" / "report.md").read_text()
    assert "seed=0" in md and "seed=1" in md and "finished" in md


CHROMIUM = "/usr/bin/chromium"


def ensure_chromium() -> str | None:
    """Chromium's path, installing Debian's package when missing and possible; None otherwise."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"],
            capture_output=True,
            timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    return CHROMIUM if Path(CHROMIUM).exists() else None


PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-loaded', imgs.filter(i => i.complete && i.naturalWidth > 0).length);
});</script>"""


def test_the_html_report_renders_offline_in_headless_chromium_with_every_image_loaded(run_of, tmp_path: Path) -> None:
    chromium = ensure_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed and could not be installed (apt-get chromium needs root and Debian)")
    run = run_of("stackwise")
    analyze(f"run={run}")
    page = tmp_path / "report.html"
    page.write_text((run / "report" / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, proc.stderr[-2000:]
    images = int(re.search(r'data-images="(\d+)"', body.group(0)).group(1))
    loaded = int(re.search(r'data-loaded="(\d+)"', body.group(0)).group(1))
    assert images >= 5 and loaded == images
