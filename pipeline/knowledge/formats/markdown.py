"""Markdown (CommonMark, markdown-it) as structured blocks, with mkdocs and MyST extensions unwrapped.

Headings, paragraphs and list items become blocks (blocks.py holds the sentence rules); fenced and indented code,
tables, HTML blocks, images, inline HTML and YAML front matter are dropped. Extensions CommonMark does not know are
handled before parsing, outside code fences: an admonition or content tab (`!!! note "Title"`, `??? tip`, `???+`,
`=== "Tab"`) loses its marker line and its indented body is dedented so its prose is read as prose; a mkdocstrings
line (`::: package.module`) and its indented options are dropped; MyST colon-fence markers (`:::{note}`, `:::`) are
dropped and their content kept. A MyST fenced directive (```{note}) is read as Markdown when it is an admonition
(its `:option:` lines dropped) and dropped otherwise, like any other fence.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.knowledge.formats.blocks import Block, Inline, document_of
from pipeline.knowledge.formats.document import Document
from pipeline.knowledge.formats.text import text_lines

_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*(\n|\Z)", re.DOTALL)
# "!!! note", '??? tip "Title"', '???+ info', '=== "Tab"' (a bare "===" is a setext heading's underline)
_ADMONITION = re.compile(r'^(\s*)(?:(?:!!!|\?\?\?\+?)\s+[\w-]+(?:\s+".*")?|===\+?\s+".*")\s*$')
_AUTODOC = re.compile(r"^(\s*):::\s+[\w.:-]+\s*$")
_COLON_FENCE = re.compile(r"^\s*:{3,}\s*(\{[\w-]+\}.*)?$")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_MYST = re.compile(r"^\{([\w-]+)\}")
_MYST_OPTION = re.compile(r"^:[\w-]+:.*$")
_HTML_OPEN = re.compile(r"<(a|code|kbd|samp)\b", re.IGNORECASE)  # inline HTML whose text is a link or code
_HTML_CLOSE = re.compile(r"</(a|code|kbd|samp)\s*>", re.IGNORECASE)
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WORDS = frozenset({"text", "code_inline", "softbreak", "hardbreak"})  # inline children that give text or a space
MYST_ADMONITIONS = frozenset({
    "admonition", "attention", "caution", "danger", "error", "hint", "important", "note", "seealso", "tip",
    "warning", "versionadded", "versionchanged", "deprecated", "dropdown", "topic", "sidebar", "margin",
})


@functools.lru_cache(maxsize=1)
def _parser() -> Any:  # one MarkdownIt parser, built on first use
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def unwrap_extensions(lines: list[str]) -> list[str]:
    """The lines with mkdocs/MyST markers removed and admonition bodies dedented (fenced code left alone)."""
    out: list[str] = []
    fence: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        opened = _FENCE.match(line)
        if fence is not None or opened:
            if fence is None:
                fence = opened.group(1) if opened is not None else None
            elif line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence = None
            out.append(line)
            i += 1
            continue
        marker = _ADMONITION.match(line) or _AUTODOC.match(line)
        if marker is None:
            out.append("" if _COLON_FENCE.match(line) else line)
            i += 1
            continue
        body_indent = len(marker.group(1)) + 4
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) >= body_indent):
            j += 1
        if _ADMONITION.match(line):
            body = [text[4:] if text.strip() else "" for text in lines[i + 1 : j]]
            out.extend(["", *unwrap_extensions(body), ""])
        else:
            out.append("")
        i = j
    return out


def read_markdown(path: Path, split: bool = True) -> Document:
    """A Markdown file as one document of sentences with their section paths."""
    return document_of(path, markdown_blocks("".join(text_lines(path))), split)


def markdown_blocks(source: str) -> Iterator[Block]:
    """The headings, paragraphs and list items of a Markdown text, in order."""
    text = _FRONT_MATTER.sub("", source, count=1)
    lines = [line.expandtabs(4) for line in text.split("\n")]  # a tab-indented admonition body is indented too
    tokens = _parser().parse("\n".join(unwrap_extensions(lines)))
    heading = items = table = 0
    for token in tokens:
        kind = token.type
        if kind == "heading_open":
            heading = int(token.tag[1:])
        elif kind == "heading_close":
            heading = 0
        elif kind == "list_item_open":
            items += 1
        elif kind == "list_item_close":
            items -= 1
        elif kind in ("table_open", "table_close"):
            table += 1 if kind == "table_open" else -1
        elif kind == "fence" and (myst := _MYST.match(token.info.strip())) and myst.group(1) in MYST_ADMONITIONS:
            body = [line for line in token.content.split("\n") if not _MYST_OPTION.match(line.strip())]
            yield from markdown_blocks("\n".join(body))
        elif kind == "inline" and not table:
            block = _inline(token).take("heading" if heading else "item" if items else "prose", heading)
            if block is not None:
                yield block


def _inline(token: Any) -> Inline:  # a markdown_it inline Token
    """Text, code spans and link texts (Markdown or inline-HTML <a>/<code>) of an inline token; images and other
    inline HTML dropped, breaks as spaces."""
    inline = Inline()
    link: list[str] | None = None
    for child in token.children or ():
        kind = child.type
        opens = kind == "link_open" or (kind == "html_inline" and _HTML_OPEN.match(child.content))
        if opens:
            link = []
        elif kind == "link_close" or (kind == "html_inline" and _HTML_CLOSE.match(child.content)):
            inline.add("".join(link or ()), protected=True)
            link = None
        elif kind in _WORDS or (kind == "html_inline" and _BR.match(child.content)):
            text = child.content if kind in ("text", "code_inline") else " "
            if link is not None:
                link.append(text)
            else:
                inline.add(text, protected=kind == "code_inline")
    return inline
