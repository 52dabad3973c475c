"""PDF files (pypdf): text by page, paragraphs at blank lines, words cut by a line-end hyphen rejoined."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.errors import EmptyDocument, InputError
from pipeline.knowledge.formats.document import Document
from pipeline.knowledge.segment import has_words, normalise, split_sentences

_HYPHENATED = re.compile(r"(\w)-\n(\w)")  # a word cut across a PDF line end


def read_pdf(path: Path, split: bool = True) -> Document:
    """A PDF as one document; each sentence's source names its page ("file.pdf#page=3")."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if os.path.getsize(path) == 0:
        raise EmptyDocument(f"{path} is empty")
    with open(path, "rb") as handle:
        if not handle.read(1024).lstrip().startswith(b"%PDF"):
            raise InputError(f"{path} is not a PDF (no %PDF header)")
    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise InputError(f"{path} is encrypted with a password; decrypt it first")
        title = reader.metadata.title if reader.metadata else None
        sentences: list[str] = []
        sources: list[str] = []
        for number, page in enumerate(reader.pages, start=1):
            text = _HYPHENATED.sub(r"\1\2", page.extract_text() or "")
            for paragraph in re.split(r"\n\s*\n", text):
                found = split_sentences(paragraph) if split else [p for p in [normalise(paragraph)] if has_words(p)]
                sentences.extend(found)
                sources.extend([f"{path}#page={number}"] * len(found))
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise InputError(f"{path} is not a readable PDF ({type(exc).__name__}: {exc})") from exc
    if not sentences:
        raise EmptyDocument(
            f"{path}: no extractable text in {len(reader.pages)} page(s) (a scanned PDF? run OCR on it first)")
    return Document(doc_id=str(path), title=str(title) if title else None, source=str(path), sentences=tuple(sentences),
                    sources=tuple(sources))
