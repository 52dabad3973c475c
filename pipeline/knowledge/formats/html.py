"""HTML (selectolax, lexbor) as structured blocks: the page's main content, not its navigation.

The main content is the first `<main>`, `[role=main]` or `<article>`, else `<body>`; inside it navigation, header,
footer, asides, forms, scripts, styles, `<pre>` code, tables and figures are dropped. h1-h6 are headings; `<li>` and
`<dt>` are list items; other block elements (p, div, blockquote, dd, …) give prose of their own inline text, so text
loose in a `<div>` is read too. `<code>`, `<kbd>`, `<samp>` and link texts are protected from the splitter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.knowledge.formats.blocks import Block, Inline, Kind, document_of
from pipeline.knowledge.formats.document import Document
from pipeline.knowledge.formats.text import text_lines

MAIN = ("main", "[role=main]", "article")
DROPPED = (
    "nav, header, footer, aside, form, script, style, noscript, template, svg, iframe, button, select, pre, table, "
    "figure, img, .headerlink, [role=navigation], [role=banner], [role=contentinfo], [role=search], [hidden], "
    "[aria-hidden=true]"
)
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_ITEMS = frozenset({"li", "dt"})
_PROTECTED = frozenset({"code", "kbd", "samp", "tt", "var", "a"})
_INLINE = frozenset({
    "a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "del", "dfn", "em", "i", "ins", "kbd", "mark", "q", "s",
    "samp", "small", "span", "strong", "sub", "sup", "time", "tt", "u", "var", "wbr", "-text", "label", "font",
})


def read_html(path: Path, split: bool = True) -> Document:
    """An HTML page's main content as one document; its <title> titles it when there is one."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser("".join(text_lines(path)))
    title = tree.css_first("title")
    root = next((node for selector in MAIN if (node := tree.css_first(selector)) is not None), tree.body)
    for node in root.css(DROPPED) if root is not None else ():
        node.decompose()
    blocks = html_blocks(root) if root is not None else iter(())
    return document_of(path, blocks, split, title=(title.text(strip=True) or None) if title is not None else None)


def html_blocks(node: Any, kind: Kind = "prose", level: int = 0) -> Iterator[Block]:  # node: a selectolax Node
    """The headings, paragraphs and list items under a node, in order: inline runs as blocks, block elements walked."""
    inline = Inline()
    for child in node.iter(include_text=True):
        tag = child.tag
        if tag in _INLINE or tag == "br":
            _add_inline(inline, child)
            continue
        if (block := inline.take(kind, level)) is not None:
            yield block
        if tag in _HEADINGS:
            yield from html_blocks(child, "heading", _HEADINGS[tag])
        elif not tag.startswith("-"):
            yield from html_blocks(child, "item" if tag in _ITEMS else kind, level)
    if (block := inline.take(kind, level)) is not None:
        yield block


def _add_inline(inline: Inline, node: Any) -> None:  # a selectolax Node
    """An inline node's text; code and links protected, a line break a space."""
    if node.tag == "br":
        inline.add(" ")
    elif node.tag == "-text":
        inline.add(node.text(deep=False))
    elif node.tag in _PROTECTED:
        inline.add(node.text(deep=True), protected=True)
    else:
        for child in node.iter(include_text=True):
            _add_inline(inline, child)
