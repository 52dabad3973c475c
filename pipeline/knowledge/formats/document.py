"""One document's sentences in order, as every format reader returns them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One document's sentences in order; `sources` gives a sentence's own source (a PDF page) when set, `sections`
    its section path (the headings above it), and `hint` a one-line remark on how the file was read."""

    doc_id: str
    title: str | None
    source: str | None
    sentences: tuple[str, ...]
    sources: tuple[str, ...] | None = None
    sections: tuple[tuple[str, ...], ...] | None = None
    hint: str | None = None
