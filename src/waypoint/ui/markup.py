"""The one place where values from the user or the disk become markup, so that they show as the text they are.

Run directory names, checkpoint labels, tags, notes, metric names and config values are text: shown in a
Markdown field or in HTML/SVG they must never become tags, emphasis, links or code. ``md`` makes a value
literal Markdown text, ``html_text`` literal HTML text (element content or a quoted attribute value). Plain
widgets (tables, text boxes, dropdowns) show text as it is and need neither.
"""

from __future__ import annotations

import html
import re
import string

#: CommonMark lets a backslash escape any ASCII punctuation character; escaping all of them leaves no
#: emphasis, link, code span, HTML tag, entity or block marker for a Markdown renderer to find
_PUNCTUATION = re.compile(f"([{re.escape(string.punctuation)}])")


def md(value: object) -> str:
    """``value`` as Markdown that renders as exactly its text, on one line: whitespace runs become one space (as a
    browser shows them), so a line break cannot start a heading, list or code block mid-sentence."""
    return _PUNCTUATION.sub(r"\\\1", " ".join(str(value).split()))


def html_text(value: object) -> str:
    """``value`` as HTML text: ``& < > " '`` as entities (safe in element content and in quoted attributes)."""
    return html.escape(str(value), quote=True)
