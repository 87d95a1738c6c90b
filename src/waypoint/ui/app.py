"""The Gradio layout: four tabs (Runs, Run, Compare, Act), each built by one function, and the wiring of their
events to ``handlers``. No logic of its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from . import detail, runs
from .catalog import Catalog
from .handlers import SELECTORS, Handlers, open_run, shown_runs
from .markup import md

CSS = """
.wp-chart { max-width: 100%; height: auto; }
#act-message textarea, #act-verify-out textarea { font-family: ui-monospace, monospace; }
"""
RUNS_COLUMN_WIDTHS = [
    *("220px", "150px", "90px", "220px", "100px", "70px", "90px", "90px", "90px"),
    *("90px", "70px", "90px", "90px", "220px"),
]
CHECKPOINT_COLUMN_WIDTHS = ["140px", "64px", "64px", "130px", "34%", "84px", "150px", "80px", "110px", "160px"]


@dataclass
class RunsTab:
    flt: gr.Textbox
    status: gr.Dropdown
    sort_by: gr.Dropdown
    desc: gr.Checkbox
    refresh: gr.Button
    table: gr.Dataframe
    sweep_pick: gr.Dropdown
    sweep_table: gr.Dataframe
    all_rows: gr.State


@dataclass
class RunTab:
    run_pick: gr.Dropdown
    metric_pick: gr.Dropdown
    refresh: gr.Button
    summary: gr.Markdown
    metric_chart: gr.HTML
    ckpt_table: gr.Dataframe
    storage_chart: gr.HTML


@dataclass
class CompareTab:
    picks: gr.Dropdown
    button: gr.Button
    summary: gr.Markdown
    metrics: gr.Dataframe
    modules: gr.Dataframe
    tensors: gr.Dataframe
    config: gr.Dataframe


@dataclass
class ActTab:
    run: gr.Dropdown
    ckpt: gr.Dropdown
    message: gr.Textbox
    tag_name: gr.Textbox
    note: gr.Textbox
    tag_btn: gr.Button
    untag_btn: gr.Button
    pin_btn: gr.Button
    verify_btn: gr.Button
    verify_out: gr.Textbox
    force: gr.Checkbox
    confirm: gr.Checkbox
    rm_preview: gr.Button
    rm_btn: gr.Button
    keep_last: gr.Textbox
    gc_preview: gr.Button
    gc_btn: gr.Button
    part: gr.Textbox
    fmt: gr.Radio
    export_btn: gr.Button
    export_file: gr.File
    commands: gr.Code
    report_btn: gr.Button
    report_view: gr.HTML


# ---------------------------------------------------------------------- layout
def runs_tab() -> RunsTab:
    """The Runs tab: filter and sort controls, the runs table, and the sweep table."""
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
            column_widths=RUNS_COLUMN_WIDTHS,
        )
        gr.Markdown("### Sweeps (the job table `analyze.py` computes)")
        sweep_pick = gr.Dropdown([], label="sweep", elem_id="sweep-select")
        sweep_table = gr.Dataframe(headers=runs.SWEEP_COLUMNS, interactive=False, elem_id="sweep-table")
        all_rows = gr.State([])
    return RunsTab(flt, status, sort_by, desc, refresh, table, sweep_pick, sweep_table, all_rows)


def run_tab() -> RunTab:
    """The Run tab: one run's summary, metric chart, checkpoint table and storage chart."""
    with gr.Tab("Run", id="run", elem_id="tab-run"):
        with gr.Row():
            run_pick = gr.Dropdown([], label="run", elem_id="run-select", scale=3)
            metric_pick = gr.Dropdown([], label="metric", elem_id="metric-select")
            refresh = gr.Button("Refresh", elem_id="run-refresh")
        summary = gr.Markdown(elem_id="run-summary", latex_delimiters=[])
        metric_chart = gr.HTML(elem_id="run-metric-chart")
        ckpt_table = gr.Dataframe(
            headers=detail.CHECKPOINT_COLUMNS,
            interactive=False,
            elem_id="ckpt-table",
            wrap=True,
            column_widths=CHECKPOINT_COLUMN_WIDTHS,
        )
        storage_chart = gr.HTML(elem_id="run-storage-chart")
    return RunTab(run_pick, metric_pick, refresh, summary, metric_chart, ckpt_table, storage_chart)


def compare_tab() -> CompareTab:
    """The Compare tab: the checkpoints to compare and the four tables of the comparison."""
    with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
        with gr.Row():
            picks = gr.Dropdown([], multiselect=True, label="checkpoints (two or more)", elem_id="compare-select", scale=4)
            button = gr.Button("Compare", variant="primary", elem_id="compare-button")
        summary = gr.Markdown(elem_id="compare-summary", latex_delimiters=[])
        metrics = gr.Dataframe(interactive=False, label="metrics", elem_id="compare-metrics")
        modules = gr.Dataframe(interactive=False, label="per-module change (vs the first)", elem_id="compare-modules")
        tensors = gr.Dataframe(interactive=False, label="tensors that moved most", elem_id="compare-tensors")
        config = gr.Dataframe(interactive=False, label="config differences", elem_id="compare-config")
    return CompareTab(picks, button, summary, metrics, modules, tensors, config)


def act_tab() -> ActTab:
    """The Act tab: tag, verify, delete, gc, export, commands and report, top to bottom."""
    with gr.Tab("Act", id="act", elem_id="tab-act"):
        with gr.Row():
            run = gr.Dropdown([], label="run", elem_id="act-run", scale=3)
            ckpt = gr.Dropdown(SELECTORS, value="latest", label="checkpoint", elem_id="act-ckpt", allow_custom_value=False)
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
    return ActTab(
        *(run, ckpt, message, tag_name, note, tag_btn, untag_btn, pin_btn, verify_btn, verify_out, force, confirm),
        *(rm_preview, rm_btn, keep_last, gc_preview, gc_btn, part, fmt, export_btn, export_file, commands),
        *(report_btn, report_view),
    )


# ---------------------------------------------------------------------- wiring
def wire_runs(demo: gr.Blocks, h: Handlers, tab: RunsTab, choosers: list[gr.Dropdown]) -> None:
    """Page load and Refresh read every run (and fill ``choosers``: run, checkpoints, act run); the controls re-filter."""
    inputs = [tab.flt, tab.status, tab.sort_by, tab.desc]
    outputs = [tab.all_rows, tab.table, tab.sweep_pick, *choosers]
    demo.load(h.load_runs, inputs, outputs)
    tab.refresh.click(h.load_runs, inputs, outputs)
    for widget in inputs:
        widget.change(shown_runs, [tab.all_rows, *inputs], tab.table)
    tab.sweep_pick.change(h.show_sweep, tab.sweep_pick, tab.sweep_table)


def wire_run(h: Handlers, tab: RunTab, runs_table: gr.Dataframe, tabs: gr.Tabs) -> None:
    """A run or metric picked (or a Runs row clicked) shows that run."""
    outputs = [tab.summary, tab.metric_pick, tab.metric_chart, tab.ckpt_table, tab.storage_chart]
    tab.run_pick.change(lambda r: h.show_run(r, None), tab.run_pick, outputs)
    tab.metric_pick.input(h.show_run, [tab.run_pick, tab.metric_pick], outputs)
    tab.refresh.click(h.show_run, [tab.run_pick, tab.metric_pick], outputs)
    runs_table.select(open_run, runs_table, [tab.run_pick, tabs])


def wire_compare(h: Handlers, tab: CompareTab) -> None:
    tab.button.click(h.compare, tab.picks, [tab.summary, tab.metrics, tab.modules, tab.tensors, tab.config])


def wire_act_tags(h: Handlers, tab: ActTab) -> None:
    """Choosing a run or checkpoint, the commands for it, tag / untag / pin, and verify."""
    tab.run.change(h.ckpt_choices, tab.run, tab.ckpt)
    tab.ckpt.change(h.commands, [tab.run, tab.ckpt], tab.commands)
    tab.tag_btn.click(h.tag, [tab.run, tab.ckpt, tab.tag_name, tab.note], tab.message)
    tab.untag_btn.click(h.untag, [tab.run, tab.ckpt, tab.tag_name, tab.note], tab.message)
    tab.pin_btn.click(h.pin, [tab.run, tab.ckpt, tab.note], tab.message)
    tab.verify_btn.click(h.verify, tab.run, tab.verify_out)


def wire_act_removal(h: Handlers, tab: ActTab) -> None:
    """Delete and gc: previews, and the real thing (which refreshes the checkpoint choices)."""
    tab.rm_preview.click(h.preview_delete, [tab.run, tab.ckpt, tab.force], tab.message)
    tab.rm_btn.click(h.delete, [tab.run, tab.ckpt, tab.force, tab.confirm], [tab.message, tab.ckpt])
    tab.gc_preview.click(h.preview_gc, [tab.run, tab.keep_last], tab.message)
    tab.gc_btn.click(h.gc, [tab.run, tab.keep_last, tab.confirm], [tab.message, tab.ckpt])


def wire_act_outputs(h: Handlers, tab: ActTab) -> None:
    """Export (a file to download) and the analyze report."""
    tab.export_btn.click(h.export, [tab.run, tab.ckpt, tab.part, tab.fmt], [tab.message, tab.export_file])
    tab.report_btn.click(h.report, tab.run, [tab.message, tab.report_view])


def build(catalog: Catalog, *, export_dir: str | Path | None = None) -> gr.Blocks:
    """The interface over ``catalog``'s runs."""
    h = Handlers(catalog, export_dir)
    # exported weights copied into Gradio's cache are deleted after an hour, and when the server stops
    with gr.Blocks(title="Waypoint", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        roots = ", ".join(md(r) for r in catalog.roots)
        gr.Markdown(f"## Waypoint: runs and checkpoints  \n{roots}", latex_delimiters=[])
        with gr.Tabs(elem_id="tabs") as tabs:
            runs_ui, run_ui, compare_ui, act_ui = runs_tab(), run_tab(), compare_tab(), act_tab()
        wire_runs(demo, h, runs_ui, [run_ui.run_pick, compare_ui.picks, act_ui.run])
        wire_run(h, run_ui, runs_ui.table, tabs)
        wire_compare(h, compare_ui)
        wire_act_tags(h, act_ui)
        wire_act_removal(h, act_ui)
        wire_act_outputs(h, act_ui)
    return demo
