"""Plain paragraphs of a Markdown text, parsed by markdown-it (CommonMark + tables).

Paragraphs, list items and block quotes become paragraphs of their inline text (emphasis,
links and inline code keep their words; images and inline HTML are dropped); code blocks,
HTML blocks and YAML front matter are dropped; headings are not sentences, but the first
one titles the document; a table row becomes "header: cell; header: cell".
"""

from __future__ import annotations

import functools
import re

_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*(\n|\Z)", re.DOTALL)
_TEXT_CHILDREN = {"text", "code_inline", "softbreak", "hardbreak"}


@functools.lru_cache(maxsize=1)
def _parser():  # one parser, built on first use
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table")


def inline_text(token) -> str:  # a markdown_it Token
    """The words of an inline token: text and inline code; breaks as spaces; images and HTML dropped."""
    parts = []
    for child in token.children or ():
        if child.type in _TEXT_CHILDREN:
            parts.append(" " if child.type.endswith("break") else child.content)
    return " ".join("".join(parts).split())


def markdown_paragraphs(source: str) -> tuple[str | None, list[str]]:
    """(the first heading or None, the paragraphs' plain text) of a Markdown document."""
    tokens = _parser().parse(_FRONT_MATTER.sub("", source, count=1))
    title: str | None = None
    paragraphs: list[str] = []
    headers: list[str] = []
    row: list[str] = []
    in_heading = in_header_row = in_row = False
    for token in tokens:
        kind = token.type
        if kind == "heading_open":
            in_heading = True
        elif kind == "heading_close":
            in_heading = False
        elif kind == "thead_open":
            headers, in_header_row = [], True
        elif kind == "thead_close":
            in_header_row = False
        elif kind == "tr_open":
            row, in_row = [], True
        elif kind == "tr_close":
            in_row = False
            if not in_header_row and any(row):
                named = [f"{h}: {c}" if h else c for h, c in zip(headers + [""] * len(row), row) if c]
                paragraphs.append("; ".join(named))
        elif kind == "inline":
            text = inline_text(token)
            if in_heading:
                title = title or text or None
            elif in_row:
                (headers if in_header_row else row).append(text)
            elif text:
                paragraphs.append(text)
    return title, paragraphs
