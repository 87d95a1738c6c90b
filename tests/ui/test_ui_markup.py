"""Values from the user or the disk show as the text they are wherever the interface puts them into Markdown or HTML.

Run directory names, monitored metric names, metric names and notes reach the Run and Compare summaries
(Markdown) and the charts (SVG); rendered with a CommonMark renderer they must give back exactly their text,
with no tag, emphasis, link or code span. (The real browser check is in test_ui_browser.py.)
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from uikit import make_run

from waypoint.ui import compare, detail
from waypoint.ui.catalog import Catalog
from waypoint.ui.markup import html_text, md

MarkdownIt = pytest.importorskip("markdown_it", reason="rendering Markdown in tests needs markdown-it-py").MarkdownIt

IMG = "<img src=x onerror=alert(1)>"
HOSTILE = [
    IMG,
    "**bold** and __strong__",
    "_it_ *it* ~~gone~~",
    "[link](http://example.org) ![pic](x.png) <http://example.org> www.example.org",
    "`code` ```fence```",
    "$$x^2$$ \\(x\\)",
    "&amp; &lt;b&gt; &#60;",
    "# heading\n- item\n1. item\n> quote\n    indented code\n===",
    "a | b\n---|---",
    "back\\slash\\* \\",
]


def rendered_text(markdown: str) -> str:
    """The text of one rendered paragraph; fails when the renderer made anything but a plain paragraph of text."""
    out = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(markdown)
    if out == "":
        return ""
    match = re.fullmatch(r"<p>([^<>]*)</p>\n", out)
    assert match, f"{markdown!r} rendered as markup: {out!r}"
    return html.unescape(match.group(1))


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("text", HOSTILE)
def test_md_renders_markup_like_text_as_exactly_that_text(text: str) -> None:
    assert rendered_text(md(text)) == one_line(text)


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=80))
def test_md_renders_any_text_as_exactly_that_text(text: str) -> None:
    assert rendered_text(md(text)) == one_line(text)


def test_html_text_leaves_no_tag_and_no_way_out_of_a_quoted_attribute() -> None:
    out = html_text(IMG + "'\"&")
    assert "<" not in out and ">" not in out and "'" not in out and '"' not in out
    assert html.unescape(out) == IMG + "'\"&"


@pytest.fixture
def hostile_runs(tmp_path: Path) -> Catalog:
    """Two runs named like markup; the second monitors (and logs) a metric named like markup."""
    make_run(tmp_path / "outputs" / IMG)
    make_run(tmp_path / "outputs" / "**bold** _it_", metric=IMG + " **m**")
    return Catalog([tmp_path / "outputs"])


def test_the_run_summary_shows_a_monitored_metric_named_like_markup_literally(hostile_runs: Catalog) -> None:
    view = detail.run_view(hostile_runs, "outputs/**bold** _it_")
    assert view["monitor"] == IMG + " **m**"
    assert f"monitored metric {IMG} **m**;" in rendered_text(view["summary"])


def test_the_compare_summary_shows_run_names_like_markup_literally(hostile_runs: Catalog) -> None:
    doc = compare.compare(hostile_runs, [f"outputs/{IMG}@best", "outputs/**bold** _it_@best"])
    (pair,) = doc["pairs"]
    text = rendered_text(pair["summary"])
    assert text.startswith(f"outputs/{IMG}@step_000000020 -> outputs/**bold** _it_@step_000000020: ")


def test_the_charts_show_metric_names_like_markup_as_text(hostile_runs: Catalog) -> None:
    view = detail.run_view(hostile_runs, "outputs/**bold** _it_")
    svg = view["metric_svg"]
    assert view["metric"] == IMG + " **m**" and svg.count("<circle") == 3
    assert "<img" not in svg and html.escape(IMG) in svg  # the chart title and each checkpoint's hover text
    assert re.findall(r"<(\w+)", svg) and set(re.findall(r"<(\w+)", svg)) <= {
        "svg",
        "text",
        "rect",
        "line",
        "polyline",
        "title",
        "circle",
    }


def test_a_refusal_naming_a_run_like_markup_shows_it_literally(hostile_runs: Catalog) -> None:
    pytest.importorskip("gradio", reason="the event handlers need the ui extra")
    from waypoint.ui.handlers import Handlers

    summary = Handlers(hostile_runs).show_run(f"outputs/{IMG}/../**x**", None)[0]
    assert summary.startswith("**refused:** ")
    assert (
        rendered_text(summary.removeprefix("**refused:** "))
        == f"'outputs/{IMG}/../**x**' is not a run under {hostile_runs.roots[0]}"
    )
