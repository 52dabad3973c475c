"""reStructuredText (docutils) as structured blocks: the doctree walked, sections giving the section path.

Section titles are headings; paragraphs are prose (list items are items, admonitions' and block quotes' paragraphs
prose, an admonition's title dropped); literal and doctest blocks, tables, raw blocks, comments, images, figures,
field and option lists, rubrics, the `contents` topic, targets and substitution definitions are dropped. Inline
literals and references are protected from the splitter. Docutils does not know Sphinx directives and roles: an
unknown directive (code-block, toctree, automodule) becomes an error node and is dropped, an unknown role keeps its
text (":func:`run`" reads "run", ":class:`Auth <pkg.Auth>`" reads "Auth", protected). Docutils reports nothing,
includes no file and passes no raw HTML.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.knowledge.formats.blocks import Block, Inline, document_of
from pipeline.knowledge.formats.document import Document
from pipeline.knowledge.formats.text import text_lines

_ROLE = re.compile(r"^:[\w:.+-]+:`(.*?)(?:\s*<[^<>]*>)?`$", re.DOTALL)  # :class:`AuthBase <requests.auth.AuthBase>`
_SETTINGS = {
    "report_level": 5, "halt_level": 5, "warning_stream": False, "file_insertion_enabled": False,
    "raw_enabled": False, "doctitle_xform": False, "sectsubtitle_xform": False, "input_encoding": "unicode",
}
_DROPPED = frozenset({
    "literal_block", "doctest_block", "table", "raw", "comment", "image", "figure", "field_list", "docinfo",
    "option_list", "rubric", "target", "substitution_definition", "system_message", "footnote", "citation",
    "title", "subtitle", "transition", "pending", "math_block",
})
_INLINE_PROTECTED = frozenset({"literal", "reference", "title_reference", "math"})


def read_rst(path: Path, split: bool = True) -> Document:
    """A reStructuredText file as one document of sentences with their section paths."""
    from docutils.core import publish_doctree
    from docutils.utils import SystemMessage

    try:
        tree = publish_doctree("".join(text_lines(path)), source_path=str(path), settings_overrides=_SETTINGS)
    except SystemMessage as exc:
        raise InputError(f"{path}: not valid reStructuredText ({exc})") from exc
    return document_of(path, rst_blocks(tree), split)


def rst_blocks(node: Any, depth: int = 0, item: bool = False) -> Iterator[Block]:  # node: a docutils Node
    """The headings, paragraphs and list items under a doctree node, in order."""
    for child in node.children:
        name = child.tagname
        if name in _DROPPED or (name == "topic" and "contents" in child.get("classes", ())):
            continue
        if name == "section":
            title = next((c for c in child.children if c.tagname == "title"), None)
            block = _inline(title).take("heading", depth + 1) if title is not None else None
            if block is not None:
                yield block
            yield from rst_blocks(child, depth + 1)
        elif name in ("paragraph", "line"):
            block = _inline(child).take("item" if item else "prose")
            if block is not None:
                yield block
        elif name == "list_item":
            yield from rst_blocks(child, depth, item=True)
        elif hasattr(child, "children") and name != "#text":
            yield from rst_blocks(child, depth, item and name not in ("block_quote",))


def _inline(node: Any) -> Inline:  # a docutils Node
    """Text of a paragraph or title; literals and references protected, unknown roles reduced to their text."""
    inline = Inline()

    def walk(current: Any) -> None:
        """Adds the text under `current`, depth first."""
        for child in current.children:
            name = child.tagname
            if name == "#text":
                inline.add(str(child).replace("\n", " "))
            elif name in _INLINE_PROTECTED:
                inline.add(child.astext(), protected=True)
            elif name == "problematic":
                role = _ROLE.match(child.astext())
                inline.add(role.group(1) if role else child.astext(), protected=True)
            elif name not in ("footnote_reference", "citation_reference", "image", "system_message"):
                walk(child)

    walk(node)
    return inline
