"""The Gradio layout: four tabs (Runs, Run, Compare, Act) wired to the view models. No logic of its own."""

from __future__ import annotations

import html
import logging
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

log = logging.getLogger(__name__)

CSS = """
.wp-chart { max-width: 100%; height: auto; }
#act-message textarea, #act-verify-out textarea { font-family: ui-monospace, monospace; }
"""
SELECTORS = ["latest", "best"]


def _frame(rows: list[list[Any]], columns: list[str]) -> pd.DataFrame:
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return pd.DataFrame([[clean(v) for v in r] for r in rows], columns=columns)


def _say(fn: Callable[[], str]) -> str:
    """Run an action; a refusal or an error becomes its one-sentence message."""
    try:
        return fn()
    except (UIError, CheckpointError, ValueError, OSError) as exc:
        return f"refused: {exc}" if not str(exc).startswith("not ") else str(exc)


def build(catalog: Catalog, *, export_dir: str | Path | None = None) -> gr.Blocks:
    """The interface over ``catalog``'s runs."""

    def run_ids() -> list[str]:
        return [r.id for r in catalog.runs()]

    def ckpt_ids() -> list[str]:
        out = []
        for r in catalog.runs():
            if r.has_checkpoints:
                try:
                    with catalog.manager(r.id) as mgr:
                        out += [f"{r.id}@{i.name}" for i in mgr.list() if i.valid]
                except (UIError, CheckpointError, OSError):
                    continue
        return out

    # exported weights copied into Gradio's cache are deleted after an hour, and when the server stops
    with gr.Blocks(title="Waypoint", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## Waypoint: runs and checkpoints  \n" + html.escape(", ".join(str(r) for r in catalog.roots)))
        with gr.Tabs(elem_id="tabs") as tabs:
            # ------------------------------------------------------------------ Runs
            with gr.Tab("Runs", id="runs", elem_id="tab-runs"):
                with gr.Row():
                    flt = gr.Textbox(label="filter (run, model, overrides)", elem_id="runs-filter", scale=3)
                    status = gr.Dropdown(["all", *runs.STATUSES], value="all", label="status", elem_id="runs-status")
                    sort_by = gr.Dropdown(runs.COLUMNS, value="run", label="sort by", elem_id="runs-sort")
                    desc = gr.Checkbox(label="descending", value=False)
                    refresh = gr.Button("Refresh", elem_id="runs-refresh")
                table = gr.Dataframe(
                    headers=runs.COLUMNS,
                    interactive=False,
                    elem_id="runs-table",
                    wrap=True,
                    show_search="filter",
                    column_widths=[
                        *("220px", "150px", "90px", "220px", "100px", "70px", "90px", "90px", "90px"),
                        *("90px", "70px", "90px", "90px", "220px"),
                    ],
                )
                gr.Markdown("### Sweeps (the job table `analyze.py` computes)")
                sweep_pick = gr.Dropdown([], label="sweep", elem_id="sweep-select")
                sweep_table = gr.Dataframe(headers=runs.SWEEP_COLUMNS, interactive=False, elem_id="sweep-table")
                all_rows = gr.State([])

            # ------------------------------------------------------------------ Run
            with gr.Tab("Run", id="run", elem_id="tab-run"):
                with gr.Row():
                    run_pick = gr.Dropdown([], label="run", elem_id="run-select", scale=3)
                    metric_pick = gr.Dropdown([], label="metric", elem_id="metric-select")
                    run_refresh = gr.Button("Refresh", elem_id="run-refresh")
                run_summary = gr.Markdown(elem_id="run-summary")
                metric_chart = gr.HTML(elem_id="run-metric-chart")
                ckpt_table = gr.Dataframe(
                    headers=detail.CHECKPOINT_COLUMNS,
                    interactive=False,
                    elem_id="ckpt-table",
                    wrap=True,
                    column_widths=["140px", "64px", "64px", "130px", "34%", "84px", "150px", "80px", "110px", "160px"],
                )
                storage_chart = gr.HTML(elem_id="run-storage-chart")

            # ------------------------------------------------------------------ Compare
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                with gr.Row():
                    picks = gr.Dropdown(
                        [], multiselect=True, label="checkpoints (two or more)", elem_id="compare-select", scale=4
                    )
                    cmp_button = gr.Button("Compare", variant="primary", elem_id="compare-button")
                cmp_summary = gr.Markdown(elem_id="compare-summary")
                cmp_metrics = gr.Dataframe(interactive=False, label="metrics", elem_id="compare-metrics")
                cmp_modules = gr.Dataframe(interactive=False, label="per-module change (vs the first)", elem_id="compare-modules")
                cmp_tensors = gr.Dataframe(interactive=False, label="tensors that moved most", elem_id="compare-tensors")
                cmp_config = gr.Dataframe(interactive=False, label="config differences", elem_id="compare-config")

            # ------------------------------------------------------------------ Act
            with gr.Tab("Act", id="act", elem_id="tab-act"):
                with gr.Row():
                    act_run = gr.Dropdown([], label="run", elem_id="act-run", scale=3)
                    act_ckpt = gr.Dropdown(
                        SELECTORS, value="latest", label="checkpoint", elem_id="act-ckpt", allow_custom_value=False
                    )
                message = gr.Textbox(label="result", elem_id="act-message", interactive=False, lines=2)
                with gr.Row():
                    tag_name = gr.Textbox(label="tag", elem_id="act-tag")
                    note = gr.Textbox(label="note", elem_id="act-note", scale=2)
                    tag_btn = gr.Button("Tag", elem_id="act-tag-button")
                    untag_btn = gr.Button("Untag", elem_id="act-untag-button")
                    pin_btn = gr.Button("Pin", elem_id="act-pin-button")
                with gr.Row():
                    verify_btn = gr.Button("Verify run", elem_id="act-verify-button")
                verify_out = gr.Textbox(label="verification", elem_id="act-verify-out", interactive=False, lines=4)
                with gr.Row():
                    force = gr.Checkbox(label="force (pinned / best / latest)", elem_id="act-force")
                    confirm = gr.Checkbox(label="I confirm: delete / collect for real", elem_id="act-confirm")
                    rm_preview = gr.Button("Preview delete", elem_id="act-rm-preview")
                    rm_btn = gr.Button("Delete checkpoint", variant="stop", elem_id="act-rm-button")
                with gr.Row():
                    keep_last = gr.Textbox(label="gc: keep last N (empty: the run's retention)", elem_id="act-keep-last")
                    gc_preview = gr.Button("Preview gc (dry run)", elem_id="act-gc-preview")
                    gc_btn = gr.Button("Run gc", variant="stop", elem_id="act-gc-button")
                with gr.Row():
                    part = gr.Textbox(label="export: key prefix (empty: everything)", elem_id="act-part", scale=2)
                    fmt = gr.Radio(["safetensors", "pt"], value="safetensors", label="format", elem_id="act-format")
                    export_btn = gr.Button("Export", elem_id="act-export-button")
                export_file = gr.File(label="download", elem_id="act-export-file", interactive=False)
                commands = gr.Code(label="resume / evaluate (copy and paste)", language="shell", elem_id="act-commands")
                report_btn = gr.Button("Generate analyze report", elem_id="act-report-button")
                report_view = gr.HTML(elem_id="act-report")

        # ------------------------------------------------------------------ wiring: Runs
        def load_runs(text: str, st: str, col: str, descending: bool):
            rows = runs.runs_table(catalog)
            shown = runs.sort_rows(runs.filter_rows(rows, text, st), col or "run", bool(descending))
            sweeps = sorted(catalog.sweeps())
            ids, ckpts = run_ids(), ckpt_ids()
            return (
                rows,
                _frame(runs.as_table(shown), runs.COLUMNS),
                gr.Dropdown(choices=sweeps, value=sweeps[0] if sweeps else None),
                gr.Dropdown(choices=ids),
                gr.Dropdown(choices=ckpts),
                gr.Dropdown(choices=ids),
            )

        def reshow(rows: list[dict], text: str, st: str, col: str, descending: bool):
            shown = runs.sort_rows(runs.filter_rows(rows, text, st), col or "run", bool(descending))
            return _frame(runs.as_table(shown), runs.COLUMNS)

        def show_sweep(sweep_id: str | None):
            if not sweep_id:
                return _frame([], runs.SWEEP_COLUMNS)
            rows = runs.sweep_table(catalog, sweep_id)
            return _frame([[r.get(c) for c in runs.SWEEP_COLUMNS] for r in rows], runs.SWEEP_COLUMNS)

        run_inputs = [flt, status, sort_by, desc]
        runs_outputs = [all_rows, table, sweep_pick, run_pick, picks, act_run]
        demo.load(load_runs, run_inputs, runs_outputs)
        refresh.click(load_runs, run_inputs, runs_outputs)
        for widget in (flt, status, sort_by, desc):
            widget.change(reshow, [all_rows, *run_inputs], table)
        sweep_pick.change(show_sweep, sweep_pick, sweep_table)

        # ------------------------------------------------------------------ wiring: Run
        def show_run(run_id: str | None, metric: str | None):
            if not run_id:
                return "", gr.Dropdown(choices=[]), "", _frame([], detail.CHECKPOINT_COLUMNS), ""
            try:
                view = detail.run_view(catalog, run_id, metric)
            except (UIError, CheckpointError, OSError) as exc:
                return f"**refused:** {exc}", gr.Dropdown(choices=[]), "", _frame([], detail.CHECKPOINT_COLUMNS), ""
            return (
                view["summary"],
                gr.Dropdown(choices=view["metrics"], value=view["metric"]),
                view["metric_svg"],
                _frame(view["rows"], detail.CHECKPOINT_COLUMNS),
                view["storage_svg"],
            )

        run_outputs = [run_summary, metric_pick, metric_chart, ckpt_table, storage_chart]
        run_pick.change(lambda r: show_run(r, None), run_pick, run_outputs)
        metric_pick.input(show_run, [run_pick, metric_pick], run_outputs)
        run_refresh.click(show_run, [run_pick, metric_pick], run_outputs)

        def open_run(rows: pd.DataFrame, evt: gr.SelectData):
            row = evt.row_value if evt is not None else None
            run_id = row[0] if row else None
            return gr.Dropdown(value=run_id), gr.Tabs(selected="run")

        table.select(open_run, table, [run_pick, tabs])

        # ------------------------------------------------------------------ wiring: Compare
        def do_compare(refs: list[str]):
            empty = pd.DataFrame()
            try:
                doc = cmp.compare(catalog, refs or [])
            except (UIError, CheckpointError, OSError) as exc:
                return f"**refused:** {exc}", empty, empty, empty, empty
            metrics = _frame(doc["metrics"], ["metric", *doc["labels"]])
            modules = _frame(
                [[p["b"], *m] for p in doc["pairs"] for m in p["modules"]],
                ["vs", "module", "tensors changed", "unchanged", "relative change", "cosine"],
            )
            tensors = _frame(
                [[p["b"], *t] for p in doc["pairs"] for t in p["tensors"]],
                ["vs", "tensor", "relative change", "cosine", "max |diff|"],
            )
            config = _frame([[p["b"], *c] for p in doc["pairs"] for c in p["config"]], ["vs", "config key", "first", "this"])
            summary = "  \n".join(p["summary"] for p in doc["pairs"])
            if not doc["pairs"] or not any(p["config"] for p in doc["pairs"]):
                summary += "  \nsame config"
            return summary, metrics, modules, tensors, config

        cmp_button.click(do_compare, picks, [cmp_summary, cmp_metrics, cmp_modules, cmp_tensors, cmp_config])

        # ------------------------------------------------------------------ wiring: Act
        def ckpt_choices(run_id: str | None):
            if not run_id:
                return gr.Dropdown(choices=SELECTORS, value="latest")
            try:
                with catalog.manager(run_id) as mgr:
                    names = [i.name for i in mgr.list() if i.valid]
            except (UIError, CheckpointError, OSError):
                names = []
            return gr.Dropdown(choices=SELECTORS + names, value="latest")

        act_run.change(ckpt_choices, act_run, act_ckpt)

        def show_commands(run_id: str | None, sel: str | None):
            if not run_id or not sel:
                return ""
            try:
                return actions.commands(catalog, run_id, sel)
            except (UIError, CheckpointError, OSError) as exc:
                return f"# {exc}"

        act_ckpt.change(show_commands, [act_run, act_ckpt], commands)

        def refreshed(msg: str, run_id: str | None):
            return msg, ckpt_choices(run_id) if msg and not msg.startswith(("not ", "refused")) else gr.Dropdown()

        tag_btn.click(
            lambda r, s, t, n: _say(lambda: actions.tag(catalog, r, s, t, n)), [act_run, act_ckpt, tag_name, note], message
        )
        untag_btn.click(
            lambda r, s, t, n: _say(lambda: actions.untag(catalog, r, s, t, n)), [act_run, act_ckpt, tag_name, note], message
        )
        pin_btn.click(lambda r, s, n: _say(lambda: actions.pin(catalog, r, s, n)), [act_run, act_ckpt, note], message)

        def do_verify(run_id: str | None, progress=gr.Progress()):  # noqa: B008 - Gradio's way to report progress
            return _say(lambda: actions.verify_text(actions.verify(catalog, run_id or "", lambda f, d: progress(f, desc=d))))

        verify_btn.click(do_verify, act_run, verify_out)
        rm_preview.click(
            lambda r, s, f: _say(
                lambda: actions.delete_text(actions.delete(catalog, r, s, confirmed=False, force=f, dry_run=True))
            ),
            [act_run, act_ckpt, force],
            message,
        )
        rm_btn.click(
            lambda r, s, f, c: refreshed(
                _say(lambda: actions.delete_text(actions.delete(catalog, r, s, confirmed=c, force=f))), r
            ),
            [act_run, act_ckpt, force, confirm],
            [message, act_ckpt],
        )

        def keep(text: str | None) -> int | None:
            text = (text or "").strip()
            if not text:
                return None
            if not text.isdigit():
                raise ActionRefusedError(f"keep last N takes a whole number 0 or more, not '{text}'")
            return int(text)

        gc_preview.click(
            lambda r, n: _say(lambda: actions.gc_text(actions.gc(catalog, r, keep_last=keep(n), dry_run=True))),
            [act_run, keep_last],
            message,
        )
        gc_btn.click(
            lambda r, n, c: refreshed(
                _say(lambda: actions.gc_text(actions.gc(catalog, r, keep_last=keep(n), dry_run=False, confirmed=c))), r
            ),
            [act_run, keep_last, confirm],
            [message, act_ckpt],
        )

        def do_export(run_id: str | None, sel: str, prefix: str, form: str):
            try:
                doc = actions.export(catalog, run_id or "", sel, part=prefix, fmt=form, out_dir=export_dir)
            except (UIError, CheckpointError, OSError) as exc:
                return f"refused: {exc}" if not str(exc).startswith("not ") else str(exc), None
            return f"exported {doc['tensors']} tensors of {doc['checkpoint']} ({doc['bytes'] / 2**20:.3f} MiB)", doc["path"]

        export_btn.click(do_export, [act_run, act_ckpt, part, fmt], [message, export_file])

        def do_report(run_id: str | None):
            try:
                doc = actions.report(catalog, run_id or "")
            except (UIError, CheckpointError, OSError) as exc:
                return f"refused: {exc}", ""
            page = Path(doc["html"]).read_text()
            frame = (
                f"<iframe id='report-frame' sandbox='' style='width:100%;height:900px;border:1px solid #ddd' "
                f'srcdoc="{html.escape(page, quote=True)}"></iframe>'
            )
            return f"report written to {doc['html']}", frame

        report_btn.click(do_report, act_run, [message, report_view])
    return demo
