"""Write docs/ui.png, the README's picture of ``waypoint ui``, from a real training run.

    .venv/bin/python tests/ui/screenshot.py            # trains (a few minutes on 2 CPU cores), then shoots

It trains DINO on the embedded digits data (``train.py trainer.max_epochs=40``) in a
neutral directory (``/tmp/waypoint-demo``, so the run reads ``outputs/dino/default``), unless that run already
finished there; then serves ``waypoint ui outputs`` from that directory, opens the Run view on ``train/loss``
in the system Chromium (/usr/bin/chromium) and saves the first screen. This is the only place the picture is
made: the browser tests never write into the tree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from browserkit import launch_chromium, open_run, open_ui, start_ui, stop_ui, ui_url

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "outputs/dino/default"


def finished(run: Path) -> bool:
    """The run's newest checkpoint is its final one (tag ``end``)."""
    from waypoint.checkpoint import CheckpointError, CheckpointManager

    if not (run / "checkpoints").is_dir():
        return False
    try:
        with CheckpointManager(run / "checkpoints", read_only=True) as mgr:
            return "end" in mgr.one("latest").tags
    except CheckpointError:
        return False


def train(demo: Path, epochs: int) -> None:
    """``train.py trainer.max_epochs=EPOCHS`` in ``demo``; its run directory is outputs/dino/default."""
    cmd = [sys.executable, str(REPO / "train.py"), f"trainer.max_epochs={epochs}", "trainer.progress_bar=false"]
    print("training:", " ".join(cmd[1:]), "in", demo, flush=True)
    subprocess.run(cmd, cwd=demo, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def science(run: Path) -> str:
    """What the picture shows, in numbers: train/loss first and last, and the teacher's kNN top-1 against its baselines."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    loss = [r["train/loss"] for r in rows if "train/loss" in r]
    knn = [r for r in rows if "val/knn_top1" in r]
    first = knn[0]
    return (
        f"train/loss {loss[0]:.3f} -> {loss[-1]:.3f} over {rows[-1]['step']} steps; kNN top-1 {first['val/knn_top1']:.3f} -> "
        f"{knn[-1]['val/knn_top1']:.3f} (raw pixels {first.get('val/knn_top1_raw_pixels', float('nan')):.3f}, "
        f"untrained {first.get('val/knn_top1_untrained', float('nan')):.3f})"
    )


def shoot(demo: Path, out: Path, metric: str) -> None:
    """Serve ``demo/outputs`` and save the Run view of the run on ``metric`` to ``out`` (replaced atomically)."""
    from playwright.sync_api import sync_playwright

    proc, lines = start_ui([Path("outputs")], demo, {**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url = ui_url(proc, lines)
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = open_ui(browser, url, RUN_ID)
            open_run(page, RUN_ID, metric)
            page.wait_for_timeout(500)  # let the components' update fade finish
            with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".ui-", suffix=".png", delete=False) as tmp:
                page.screenshot(path=tmp.name, full_page=False)
            os.replace(tmp.name, out)
            browser.close()
    finally:
        stop_ui(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", type=Path, default=Path("/tmp/waypoint-demo"), help="where the run trains")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ui.png")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--metric", default="train/loss", help="the metric the Run view's chart shows")
    args = parser.parse_args()
    demo = args.demo_dir.resolve()
    demo.mkdir(parents=True, exist_ok=True)
    run = demo / RUN_ID
    if not finished(run):
        train(demo, args.epochs)
    print(science(run), flush=True)
    shoot(demo, args.out.resolve(), args.metric)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) from {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
