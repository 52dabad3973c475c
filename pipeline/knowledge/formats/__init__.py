"""Readers of document files, one module per format, each returning a Document.

    blocks.py    the shared rules: structured blocks (heading / prose / list item) -> sentences with section paths
    markdown.py  .md .markdown (markdown-it, mkdocs and MyST markers unwrapped)
    rst.py       .rst .rest (docutils doctree)
    html.py      .html .htm (selectolax: the main content, not navigation)
    docx.py      .docx (python-docx: heading styles, paragraphs, list styles)
    text.py      .txt (paragraphs, or a line at a time), and safe UTF-8 line reading
    pdf.py       .pdf (pypdf, page by page)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.knowledge.formats.document import Document
from pipeline.knowledge.formats.docx import read_docx
from pipeline.knowledge.formats.html import read_html
from pipeline.knowledge.formats.markdown import read_markdown
from pipeline.knowledge.formats.pdf import read_pdf
from pipeline.knowledge.formats.rst import read_rst
from pipeline.knowledge.formats.text import read_txt

Reader = Callable[[Path, bool], Document]  # (file, split) -> the file as one document
READERS: dict[str, Reader] = {
    ".txt": read_txt, ".md": read_markdown, ".markdown": read_markdown, ".rst": read_rst, ".rest": read_rst,
    ".html": read_html, ".htm": read_html, ".docx": read_docx, ".pdf": read_pdf,
}
