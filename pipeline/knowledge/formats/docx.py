"""Word .docx files (python-docx) as structured blocks: heading styles as headings, list styles as list items.

"Title" and "Heading N" styles are headings (Title at level 0, above Heading 1); list styles ("List Paragraph",
"List Bullet", "List Number", …) are list items; paragraphs in a code style ("Code", "HTML Preformatted", "Macro
Text", "Source Code", "Verbatim") are dropped, like tables, headers and footers, which are not body paragraphs.
Hyperlink texts and runs in a code character style or a monospaced font are protected from the splitter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.knowledge.formats.blocks import Block, Inline, Kind, document_of
from pipeline.knowledge.formats.document import Document

_HEADING = re.compile(r"^(?:heading\s*(\d)|title)$", re.IGNORECASE)
_CODE_STYLE = re.compile(r"code|preformatted|macro|verbatim", re.IGNORECASE)
_MONOSPACE = re.compile(r"courier|consolas|mono|menlo", re.IGNORECASE)


def read_docx(path: Path, split: bool = True) -> Document:
    """A .docx file as one document; its core properties' title titles it when set."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError, OSError) as exc:
        raise InputError(f"{path} is not a readable .docx file ({type(exc).__name__}: {exc})") from exc
    title = document.core_properties.title or None
    return document_of(path, docx_blocks(document.paragraphs), split, title=title)


def docx_blocks(paragraphs: Iterable[Any]) -> Iterator[Block]:  # python-docx Paragraphs
    """Headings, prose and list items of a document's body paragraphs, in order."""
    for paragraph in paragraphs:
        style = paragraph.style.name if paragraph.style is not None else ""
        if _CODE_STYLE.search(style):
            continue
        heading = _HEADING.match(style)
        kind: Kind = "heading" if heading else "item" if style.lower().startswith("list") else "prose"
        block = _inline(paragraph).take(kind, int(heading.group(1) or 0) if heading else 0)
        if block is not None:
            yield block


def _inline(paragraph: Any) -> Inline:  # a python-docx Paragraph
    """A paragraph's runs and hyperlinks; hyperlink texts and code runs protected."""
    from docx.text.hyperlink import Hyperlink

    inline = Inline()
    for part in paragraph.iter_inner_content():
        if isinstance(part, Hyperlink):
            inline.add(part.text, protected=True)
            continue
        style = part.style.name if part.style is not None else ""
        font = part.font.name or ""
        inline.add(part.text, protected=bool(_CODE_STYLE.search(style) or _MONOSPACE.search(font)))
    return inline
