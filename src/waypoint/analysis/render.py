"""Render a report as Markdown and as one self-contained HTML file (images embedded as data URIs).

Everything a run or a user named (run directories, overrides, tags, notes, generated text) is escaped wherever
it is shown: HTML-escaped in the page, and in Markdown too (``<``, ``>``, ``&``, and ``|`` inside tables), so a
Markdown viewer that passes HTML through cannot be made to run or show markup from a name.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fmt import num


@dataclass
class Section:
    """A titled part of a report: paragraphs, tables (header + rows) and images."""

    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[Any]]]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)


def _cell(v: Any) -> str:
    return num(v)


def md_escape(text: str) -> str:
    """Text that Markdown shows as written: no HTML passes through."""
    return html.escape(str(text), quote=False)


def _md_cell(v: Any) -> str:
    return md_escape(_cell(v)).replace("|", "\\|").replace("\r", "").replace("\n", " ⏎ ")


def markdown(title: str, sections: Sequence[Section]) -> str:
    """The report as Markdown, images referenced by file name (they sit beside report.md)."""
    out = [f"# {md_escape(title)}", ""]
    for s in sections:
        out += [f"## {md_escape(s.title)}", ""]
        out += [md_escape(p) + "\n" for p in s.text]
        for header, rows in s.tables:
            out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
            out.append("")
        out += [f"![{md_escape(img.stem)}]({img.name})\n" for img in s.images]
    return "\n".join(out)


STYLE = (
    "body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222;padding:0 1em}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "vertical-align:top;white-space:pre-wrap}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}"
    "nav{font-size:13px;margin-bottom:1.5em}nav a{margin-right:1em}"
)


def html_page(title: str, sections: Sequence[Section]) -> str:
    """The report as one HTML page that needs nothing else (no network, no script, images inline)."""
    nav = " ".join(f"<a href='#s{i}'>{html.escape(s.title)}</a>" for i, s in enumerate(sections))
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<link rel='icon' href='data:,'>",  # no favicon request: the page loads nothing from anywhere
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>",
    ]
    for i, s in enumerate(sections):
        parts.append(f"<h2 id='s{i}'>{html.escape(s.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in s.text]
        for header, rows in s.tables:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows]
            parts.append("</table>")
        for img in s.images:
            data = base64.b64encode(img.read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(img.stem)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out_dir: Path, title: str, sections: Sequence[Section]) -> dict[str, Path]:
    """Write report.md and report.html into ``out_dir`` (the PNGs are already there)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(markdown(title, sections))
    page.write_text(html_page(title, sections))
    return {"markdown": md, "html": page}
