"""What the interface's events do: each handler turns widget values into view-model calls and widget updates.

The handlers hold no state but the catalog (and where exports go); ``app`` lays out the widgets and connects
each event to one of these. A refusal or an error becomes one sentence for the page, never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from waypoint.checkpoint import CheckpointError

from . import actions, detail, runs
from . import compare as cmp
from .catalog import Catalog
from .errors import ActionRefusedError, UIError
from .markup import html_text, md

SELECTORS = ["latest", "best"]
MODULE_COLUMNS = ["vs", "module", "tensors changed", "unchanged", "relative change", "cosine"]
TENSOR_COLUMNS = ["vs", "tensor", "relative change", "cosine", "max |diff|"]
CONFIG_COLUMNS = ["vs", "config key", "first", "this"]


def frame(rows: list[list[Any]], columns: list[str]) -> pd.DataFrame:
    """A table for a Dataframe widget; NaN and infinities show as empty cells."""

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return pd.DataFrame([[clean(v) for v in r] for r in rows], columns=columns)


def refusal(exc: Exception) -> str:
    """An error as the sentence the page shows: the action's own "not ..." sentences as they are."""
    return f"refused: {exc}" if not str(exc).startswith("not ") else str(exc)


def say(fn: Callable[[], str]) -> str:
    """Run an action; a refusal or an error becomes its one-sentence message."""
    try:
        return fn()
    except (UIError, CheckpointError, ValueError, OSError) as exc:
        return refusal(exc)


def keep_last_of(text: str | None) -> int | None:
    """The gc field's text as a count (empty: the run's own retention)."""
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ActionRefusedError(f"keep last N takes a whole number 0 or more, not '{text}'")
    return int(text)


def shown_runs(rows: list[dict], text: str, status: str, column: str, descending: bool) -> pd.DataFrame:
    """The Runs table after the filter and the sort."""
    shown = runs.sort_rows(runs.filter_rows(rows, text, status), column or "run", bool(descending))
    return frame(runs.as_table(shown), runs.COLUMNS)


def open_run(rows: pd.DataFrame, evt: gr.SelectData):
    """A click on a Runs row: that run in the Run tab."""
    row = evt.row_value if evt is not None else None
    run_id = row[0] if row else None
    return gr.Dropdown(value=run_id), gr.Tabs(selected="run")


class Handlers:
    """The event handlers over one catalog; exports are written under ``export_dir``."""

    def __init__(self, catalog: Catalog, export_dir: str | Path | None = None) -> None:
        self.catalog = catalog
        self.export_dir = export_dir

    # ------------------------------------------------------------------ choices
    def ckpt_ids(self) -> list[str]:
        """Every valid checkpoint of every run, as ``run@name`` (what Compare offers)."""
        out = []
        for r in self.catalog.runs():
            if r.has_checkpoints:
                try:
                    with self.catalog.manager(r.id) as mgr:
                        out += [f"{r.id}@{i.name}" for i in mgr.list() if i.valid]
                except (UIError, CheckpointError, OSError):
                    continue
        return out

    def ckpt_choices(self, run_id: str | None):
        """The Act tab's checkpoint choices for a run: the selectors, then its valid checkpoints."""
        if not run_id:
            return gr.Dropdown(choices=SELECTORS, value="latest")
        try:
            with self.catalog.manager(run_id) as mgr:
                names = [i.name for i in mgr.list() if i.valid]
        except (UIError, CheckpointError, OSError):
            names = []
        return gr.Dropdown(choices=SELECTORS + names, value="latest")

    # ------------------------------------------------------------------ Runs
    def load_runs(self, text: str, status: str, column: str, descending: bool):
        """Read every run afresh: the rows, the shown table, and the run and checkpoint choices of every tab."""
        rows = runs.runs_table(self.catalog)
        sweeps = sorted(self.catalog.sweeps())
        ids, ckpts = [r.id for r in self.catalog.runs()], self.ckpt_ids()
        return (
            rows,
            shown_runs(rows, text, status, column, descending),
            gr.Dropdown(choices=sweeps, value=sweeps[0] if sweeps else None),
            gr.Dropdown(choices=ids),
            gr.Dropdown(choices=ckpts),
            gr.Dropdown(choices=ids),
        )

    def show_sweep(self, sweep_id: str | None) -> pd.DataFrame:
        if not sweep_id:
            return frame([], runs.SWEEP_COLUMNS)
        rows = runs.sweep_table(self.catalog, sweep_id)
        return frame([[r.get(c) for c in runs.SWEEP_COLUMNS] for r in rows], runs.SWEEP_COLUMNS)

    # ------------------------------------------------------------------ Run
    def show_run(self, run_id: str | None, metric: str | None):
        """Summary, metric choices, metric chart, checkpoint table and storage chart of one run."""
        if not run_id:
            return "", gr.Dropdown(choices=[]), "", frame([], detail.CHECKPOINT_COLUMNS), ""
        try:
            view = detail.run_view(self.catalog, run_id, metric)
        except (UIError, CheckpointError, OSError) as exc:
            return f"**refused:** {md(exc)}", gr.Dropdown(choices=[]), "", frame([], detail.CHECKPOINT_COLUMNS), ""
        return (
            view["summary"],
            gr.Dropdown(choices=view["metrics"], value=view["metric"]),
            view["metric_svg"],
            frame(view["rows"], detail.CHECKPOINT_COLUMNS),
            view["storage_svg"],
        )

    # ------------------------------------------------------------------ Compare
    def compare(self, refs: list[str]):
        """Summary, metrics, per-module change, tensors that moved most and config differences."""
        empty = pd.DataFrame()
        try:
            doc = cmp.compare(self.catalog, refs or [])
        except (UIError, CheckpointError, OSError) as exc:
            return f"**refused:** {md(exc)}", empty, empty, empty, empty
        pairs = doc["pairs"]
        summary = "  \n".join(p["summary"] for p in pairs)
        if not pairs or not any(p["config"] for p in pairs):
            summary += "  \nsame config"
        return (
            summary,
            frame(doc["metrics"], ["metric", *doc["labels"]]),
            frame([[p["b"], *m] for p in pairs for m in p["modules"]], MODULE_COLUMNS),
            frame([[p["b"], *t] for p in pairs for t in p["tensors"]], TENSOR_COLUMNS),
            frame([[p["b"], *c] for p in pairs for c in p["config"]], CONFIG_COLUMNS),
        )

    # ------------------------------------------------------------------ Act
    def commands(self, run_id: str | None, selector: str | None) -> str:
        if not run_id or not selector:
            return ""
        try:
            return actions.commands(self.catalog, run_id, selector)
        except (UIError, CheckpointError, OSError) as exc:
            return f"# {exc}"

    def refreshed(self, msg: str, run_id: str | None):
        """The message, and the run's checkpoint choices read again when the action changed something."""
        return msg, self.ckpt_choices(run_id) if msg and not msg.startswith(("not ", "refused")) else gr.Dropdown()

    def tag(self, run_id: str, selector: str, name: str, note: str) -> str:
        return say(lambda: actions.tag(self.catalog, run_id, selector, name, note))

    def untag(self, run_id: str, selector: str, name: str, note: str) -> str:
        return say(lambda: actions.untag(self.catalog, run_id, selector, name, note))

    def pin(self, run_id: str, selector: str, note: str) -> str:
        return say(lambda: actions.pin(self.catalog, run_id, selector, note))

    def verify(self, run_id: str | None, progress=gr.Progress()) -> str:  # noqa: B008 - Gradio's way to report progress
        return say(lambda: actions.verify_text(actions.verify(self.catalog, run_id or "", lambda f, d: progress(f, desc=d))))

    def preview_delete(self, run_id: str, selector: str, force: bool) -> str:
        return say(
            lambda: actions.delete_text(
                actions.delete(self.catalog, run_id, selector, confirmed=False, force=force, dry_run=True)
            )
        )

    def delete(self, run_id: str, selector: str, force: bool, confirmed: bool):
        msg = say(lambda: actions.delete_text(actions.delete(self.catalog, run_id, selector, confirmed=confirmed, force=force)))
        return self.refreshed(msg, run_id)

    def preview_gc(self, run_id: str, keep_last: str) -> str:
        return say(lambda: actions.gc_text(actions.gc(self.catalog, run_id, keep_last=keep_last_of(keep_last), dry_run=True)))

    def gc(self, run_id: str, keep_last: str, confirmed: bool):
        msg = say(
            lambda: actions.gc_text(
                actions.gc(self.catalog, run_id, keep_last=keep_last_of(keep_last), dry_run=False, confirmed=confirmed)
            )
        )
        return self.refreshed(msg, run_id)

    def export(self, run_id: str | None, selector: str, prefix: str, fmt: str):
        """The message and the exported file (offered for download), or the refusal and no file."""
        try:
            doc = actions.export(self.catalog, run_id or "", selector, part=prefix, fmt=fmt, out_dir=self.export_dir)
        except (UIError, CheckpointError, OSError) as exc:
            return refusal(exc), None
        return f"exported {doc['tensors']} tensors of {doc['checkpoint']} ({doc['bytes'] / 2**20:.3f} MiB)", doc["path"]

    def report(self, run_id: str | None):
        """The message, and the report page in a sandboxed frame (no script of it runs)."""
        try:
            doc = actions.report(self.catalog, run_id or "")
        except (UIError, CheckpointError, OSError) as exc:
            return f"refused: {exc}", ""
        page = Path(doc["html"]).read_text()
        frame_html = (
            f"<iframe id='report-frame' sandbox='' style='width:100%;height:900px;border:1px solid #ddd' "
            f'srcdoc="{html_text(page)}"></iframe>'
        )
        return f"report written to {doc['html']}", frame_html
