"""Documents of a bank: .txt, .md, .jsonl, .csv and .pdf files and folders of them, as sentences with provenance.

A text or Markdown file, or a PDF, is one document split into sentences (pysbd); a JSONL or
CSV row is one document (a `text` field, else a Q→A file's `answer`; optional `id`, `title`,
`source`), split into sentences or, with `split=False`, taken whole and exactly as written.
Files are read line by line with a cap on a line's length, so a stray 10 MB line is refused
with its line number instead of filling memory. Every error is an `InputError` naming the file.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.data import json_value
from pipeline.errors import InputError
from pipeline.knowledge.markdown import markdown_paragraphs
from pipeline.knowledge.provenance import Provenance
from pipeline.knowledge.segment import split_sentences

SUFFIXES = (".txt", ".md", ".markdown", ".jsonl", ".csv", ".pdf")
MAX_LINE = 1_000_000  # characters: longer lines are not prose (minified data, a binary blob)
CONTEXT = 2  # neighbours kept on each side of a sentence
_SNIFF = 8192
_HYPHENATED = re.compile(r"(\w)-\n(\w)")  # a word cut across a PDF line end


@dataclass(frozen=True)
class Document:
    """One document's sentences in order; `sources` gives a sentence's own source (a PDF page) when set."""

    doc_id: str
    title: str | None
    source: str | None
    sentences: tuple[str, ...]
    sources: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Sentence:
    """A bank sentence and where it comes from."""

    text: str
    provenance: Provenance


def expand(paths: Sequence[Path | str]) -> list[Path]:
    """The files named by `paths`: files as given, folders recursively by suffix, hidden entries skipped."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = [
                p for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in SUFFIXES and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
            if not found:
                raise InputError(f"{path}: no {', '.join(SUFFIXES)} files in this folder")
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; supported: {', '.join(SUFFIXES)}")
            files.append(path)
        else:
            raise InputError(f"{path} does not exist")
    return files


def read_documents(paths: Sequence[Path | str], *, split: bool = True) -> Iterator[Document]:
    """The documents of files and folders, one at a time, in path order."""
    for path in expand(paths):
        suffix = path.suffix.lower()
        if suffix == ".pdf":
            yield read_pdf(path)
        elif suffix in (".jsonl", ".csv"):
            rows = read_jsonl_rows(path) if suffix == ".jsonl" else read_csv_rows(path)
            count = 0
            for document in rows_to_documents(path, rows, split):
                count += 1
                yield document
            if not count:
                raise InputError(f"{path}: no rows")
        else:
            yield read_text(path, markdown=suffix != ".txt")


def bank_sentences(documents: Iterable[Document], *, context: int = CONTEXT, seen: set[str] | None = None) -> Iterator[Sentence]:
    """Each document's sentences with provenance; an exact duplicate of an earlier sentence (or of `seen`) is dropped."""
    seen = set() if seen is None else seen
    for doc in documents:
        sents = doc.sentences
        for position, text in enumerate(sents):
            if text in seen:
                continue
            seen.add(text)
            yield Sentence(text, Provenance(
                doc_id=doc.doc_id, title=doc.title,
                source=doc.sources[position] if doc.sources else doc.source,
                position=position,
                before=tuple(sents[max(0, position - context) : position]),
                after=tuple(sents[position + 1 : position + 1 + context]),
            ))


def text_lines(path: Path) -> Iterator[str]:
    """A UTF-8 file's lines (BOM dropped), refusing an empty or binary file, bad UTF-8 and over-long lines."""
    with open(path, "rb") as raw:
        head = raw.read(_SNIFF)
        if not head.strip():
            raise InputError(f"{path} is empty")
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
                raise InputError(f"{path}: not UTF-8 text at or after line {number} ({exc.reason}); save it as UTF-8") from exc
            if not line:
                return
            if len(line) > MAX_LINE:
                raise InputError(f"{path}:{number}: a line longer than {MAX_LINE:,} characters; not a text document?")
            yield line


def read_text(path: Path, *, markdown: bool) -> Document:
    """A .txt file (paragraphs between blank lines) or a Markdown file as one document."""
    title: str | None = None
    if markdown:
        title, paragraphs = markdown_paragraphs("".join(text_lines(path)))
    else:
        paragraphs = list(_paragraphs(text_lines(path)))
    sentences = [s for paragraph in paragraphs for s in split_sentences(paragraph)]
    if not sentences:
        raise InputError(f"{path}: no sentences (only blank lines or markup)")
    return Document(doc_id=str(path), title=title, source=str(path), sentences=tuple(sentences))


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
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


def read_jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSONL file's non-blank lines."""
    for number, line in enumerate(text_lines(path), start=1):
        if line.strip():
            yield number, json_value(line, f"{path}:{number}", dict, "an object with a 'text' field")


def read_csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a CSV file with a header row."""
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE))
    reader = csv.DictReader(text_lines(path))
    try:
        if reader.fieldnames is None:
            raise InputError(f"{path} is empty")
        if not {"text", "answer"} & set(reader.fieldnames):
            raise InputError(f"{path}: no 'text' column in the header (columns: {', '.join(reader.fieldnames)})")
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc


def rows_to_documents(path: Path, rows: Iterable[tuple[int, dict]], split: bool) -> Iterator[Document]:
    """One document per row: `text` (else a Q→A row's `answer`, with `answer_id` as its id)."""
    for number, row in rows:
        field = "text" if "text" in row else "answer" if "answer" in row else None
        if field is None:
            raise InputError(f"{path}:{number}: no 'text' field (nor a Q→A 'answer')")
        text = row[field]
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{path}:{number}: the {field!r} field is empty or not a string")
        doc_id = row.get("id") if field == "text" else row.get("answer_id") or row.get("id")
        sentences = split_sentences(text) if split else [text]
        if not sentences:
            raise InputError(f"{path}:{number}: no sentence in the {field!r} field (no letters or digits)")
        yield Document(
            doc_id=str(doc_id) if doc_id not in (None, "") else f"{path}:{number}",
            title=_optional(row.get("title")), source=_optional(row.get("source")) or str(path),
            sentences=tuple(sentences),
        )


def _optional(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def read_pdf(path: Path) -> Document:
    """A PDF as one document; each sentence's source names its page ("file.pdf#page=3")."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if os.path.getsize(path) == 0:
        raise InputError(f"{path} is empty")
    with open(path, "rb") as handle:
        if not handle.read(1024).lstrip().startswith(b"%PDF"):
            raise InputError(f"{path} is not a PDF (no %PDF header)")
    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise InputError(f"{path} is encrypted with a password; decrypt it first")
        title = _optional(reader.metadata.title if reader.metadata else None)
        sentences: list[str] = []
        sources: list[str] = []
        for number, page in enumerate(reader.pages, start=1):
            text = _HYPHENATED.sub(r"\1\2", page.extract_text() or "")
            for paragraph in re.split(r"\n\s*\n", text):
                found = split_sentences(paragraph)
                sentences.extend(found)
                sources.extend([f"{path}#page={number}"] * len(found))
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise InputError(f"{path} is not a readable PDF ({type(exc).__name__}: {exc})") from exc
    if not sentences:
        raise InputError(f"{path}: no extractable text in {len(reader.pages)} page(s) (a scanned PDF? run OCR on it first)")
    return Document(doc_id=str(path), title=title, source=str(path), sentences=tuple(sentences), sources=tuple(sources))


def count_documents(sentences: Iterable[Sentence]) -> int:
    """How many distinct documents the sentences come from."""
    return len({s.provenance.doc_id for s in sentences})

