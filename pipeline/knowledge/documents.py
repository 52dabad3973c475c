"""Documents of a bank: files of the supported formats and folders of them, as sentences with provenance.

Each format's reader (formats/) makes a file one Document; a JSONL or CSV row is one document (a `text` field,
else a Q→A file's `answer`; optional `id`, `title`, `source`), split into sentences or, with `split=False`, taken
whole and exactly as written. Files are read line by line with a cap on a line's length, so a stray 10 MB line is
refused with its line number instead of filling memory. Every error is an `InputError` naming the file; a folder's
unsupported files and files without a sentence, the files skipped as unreadable and the readers' hints are kept in
a `ReadReport` for the caller to show.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data import json_value
from pipeline.errors import EmptyDocument, InputError
from pipeline.knowledge.formats import READERS
from pipeline.knowledge.formats.document import Document
from pipeline.knowledge.formats.text import MAX_LINE, text_lines
from pipeline.knowledge.provenance import Provenance
from pipeline.knowledge.segment import split_sentences

__all__ = ["MAX_LINE", "SUFFIXES", "Document", "ReadReport", "Sentence", "bank_sentences", "expand", "read_documents"]

ROWS = (".jsonl", ".csv")  # a document per row
SUFFIXES = (*READERS, *ROWS)
CONTEXT = 2  # neighbours kept on each side of a sentence
LISTED = 10  # unsupported files named in the one-line note; the rest are counted


@dataclass(frozen=True)
class Sentence:
    """A bank sentence and where it comes from."""

    text: str
    provenance: Provenance


@dataclass
class ReadReport:
    """What a read left out or noticed: a folder's unsupported files and files without a sentence, files skipped as
    unreadable, readers' hints."""

    unsupported: list[Path] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one InputError message per skipped file
    hints: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One line each: the unsupported files, the files without a sentence, every hint, every skipped file."""
        lines = []
        if self.unsupported:
            lines.append(f"{len(self.unsupported)} unsupported file(s) not read: {_listed(self.unsupported)}")
        if self.empty:
            lines.append(f"{len(self.empty)} file(s) without a sentence (empty, or only headings, code or markup): "
                         f"{_listed(self.empty)}")
        lines.extend(f"hint: {hint}" for hint in self.hints)
        lines.extend(f"skipped: {message}" for message in self.failed)
        return lines


def _listed(paths: list[Path]) -> str:
    """The first LISTED paths, and how many more."""
    more = f" and {len(paths) - LISTED} more" if len(paths) > LISTED else ""
    return ", ".join(str(p) for p in paths[:LISTED]) + more


def expand(paths: Sequence[Path | str]) -> tuple[list[Path], list[Path]]:
    """(the files named by `paths`, the unsupported files inside its folders): folders are searched recursively by
    suffix, hidden entries skipped; a file named directly must be supported."""
    files: list[Path] = []
    unsupported: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            inside = [p for p in sorted(path.rglob("*"))
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
            found = [p for p in inside if p.suffix.lower() in SUFFIXES]
            if not found:
                raise InputError(f"{path}: no {', '.join(SUFFIXES)} files in this folder")
            files.extend(found)
            unsupported.extend(p for p in inside if p.suffix.lower() not in SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise InputError(
                    f"{path}: unsupported file type {path.suffix or '(none)'!r}; supported: {', '.join(SUFFIXES)}")
            files.append(path)
        else:
            raise InputError(f"{path} does not exist")
    return files, unsupported


def read_documents(
    paths: Sequence[Path | str], *, split: bool = True, skip_bad: bool = False, report: ReadReport | None = None,
) -> Iterator[Document]:
    """The documents of files and folders, one file at a time, in path order. A folder's file without a sentence (a
    page of headings and code) is noted in `report`, as is, with `skip_bad`, an unreadable file; the rest are read."""
    files, unsupported = expand(paths)
    named = {Path(p) for p in paths}
    report = ReadReport() if report is None else report
    report.unsupported.extend(unsupported)
    for path in files:
        streamed = path.suffix.lower() in ROWS and not skip_bad  # a large JSONL is not held twice
        try:  # else the whole file first, so a bad row late in it adds none of its rows
            documents = read_file(path, split) if streamed else iter(list(read_file(path, split)))
        except EmptyDocument:
            if path in named and not skip_bad:
                raise
            report.empty.append(path)
            continue
        except InputError as exc:
            if not skip_bad:
                raise
            report.failed.append(str(exc))
            continue
        for document in documents:
            if document.hint:
                report.hints.append(document.hint)
            yield document


def read_file(path: Path, split: bool = True) -> Iterator[Document]:
    """One file's documents: a row each for JSONL and CSV, else the whole file."""
    suffix = path.suffix.lower()
    if suffix not in ROWS:
        yield READERS[suffix](path, split)
        return
    rows = read_jsonl_rows(path) if suffix == ".jsonl" else read_csv_rows(path)
    count = 0
    for document in rows_to_documents(path, rows, split):
        count += 1
        yield document
    if not count:
        raise InputError(f"{path}: no rows")


def bank_sentences(
    documents: Iterable[Document], *, context: int = CONTEXT, seen: set[str] | None = None,
) -> Iterator[Sentence]:
    """Each document's sentences with provenance; an exact duplicate of an earlier one (or of `seen`) is left out."""
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
                position=position, section=doc.sections[position] if doc.sections else (),
                before=tuple(sents[max(0, position - context) : position]),
                after=tuple(sents[position + 1 : position + 1 + context]),
            ))


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
            raise EmptyDocument(f"{path} is empty")
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


def count_documents(sentences: Iterable[Sentence]) -> int:
    """How many distinct documents the sentences come from."""
    return len({s.provenance.doc_id for s in sentences})

