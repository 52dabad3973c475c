"""Plain text files: UTF-8 lines read safely, and a .txt file's newlines decided by its shape.

Blank lines end paragraphs and a paragraph's lines are joined before splitting. A file whose non-empty lines
mostly end a sentence (at least LINE_SENTENCES of them end in . ! ? or a closing quote after one) is read a line at
a time instead: lines are never joined, and each is split only where it holds several sentences. With
`split=False` every non-empty line is one sentence, exactly as written (its line end and outer spaces dropped).
A file of RECORD_LINES lines or more that looks like one sentence or record per line gets a one-line hint
(Document.hint), which the CLI shows.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.errors import EmptyDocument, InputError
from pipeline.knowledge.formats.document import Document
from pipeline.knowledge.segment import has_words, split_sentences

MAX_LINE = 1_000_000  # characters: longer lines are not prose (minified data, a binary blob)
LINE_SENTENCES = 0.8  # share of non-empty lines ending a sentence above which a file is read a line at a time
RECORD_LINES = 20  # lines from which a file's shape is worth a hint (one sentence or record per line)
_SNIFF = 8192
_ENDS_SENTENCE = re.compile(r"[.!?][\"'”’)\]»]*\s*$")


def text_lines(path: Path) -> Iterator[str]:
    """A UTF-8 file's lines (BOM dropped), refusing an empty or binary file, bad UTF-8 and over-long lines."""
    with open(path, "rb") as raw:
        head = raw.read(_SNIFF)
        if not head.strip():
            raise EmptyDocument(f"{path} is empty")
        if b"\x00" in head:
            raise InputError(f"{path} is a binary file, not {path.suffix} text (it holds NUL bytes)")
        raw.seek(0)
        reader = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline=None)
        number = 0
        while True:
            number += 1
            try:
                line = reader.readline(MAX_LINE + 1)
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path}: not UTF-8 text at or after line {number} ({exc.reason}); save it as UTF-8") from exc
            if not line:
                return
            if len(line) > MAX_LINE:
                raise InputError(f"{path}:{number}: a line longer than {MAX_LINE:,} characters; not a text document?")
            yield line


def paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Runs of non-blank lines, each joined into one paragraph."""
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line)
        elif block:
            yield " ".join(block)
            block = []
    if block:
        yield " ".join(block)


def read_txt(path: Path, split: bool = True) -> Document:
    """A .txt file as one document, its newlines read as the module docstring says."""
    lines = list(text_lines(path))
    filled = [line.strip() for line in lines if line.strip()]
    hint = None
    if not split:
        sentences = [line for line in filled if has_words(line)]
    else:
        ending = sum(bool(_ENDS_SENTENCE.search(line)) for line in filled)
        by_line = len(filled) > 1 and ending >= LINE_SENTENCES * len(filled)
        if len(filled) >= RECORD_LINES and by_line:
            hint = (f"{path}: {ending:,} of {len(filled):,} lines end a sentence, so each line was read on its own; "
                    "--no-split keeps every line whole as one sentence")
        elif len(filled) >= RECORD_LINES and len(filled) == len(lines):  # no blank line at all
            hint = (f"{path}: {len(filled):,} lines and no blank line, read as one paragraph; if each line is one "
                    "sentence or record, build with --no-split")
        sentences = [s for part in (filled if by_line else paragraphs(lines)) for s in split_sentences(part)]
    if not sentences:
        raise EmptyDocument(f"{path}: no sentences (only blank lines or markup)")
    return Document(doc_id=str(path), title=None, source=str(path), sentences=tuple(sentences), hint=hint)
