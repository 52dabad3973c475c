"""Reads a bulk file (JSONL or CSV) into validated jobs; a bad line is reported with its number and skipped."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from storage.repository import NewJob


class IntakeError(Exception):
    """The whole file is unusable (missing, unknown format, undecodable header)."""


@dataclass
class Intake:
    """Accepted jobs and rejected lines, in file order."""

    jobs: list[NewJob] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def check_text(value: object, name: str, max_chars: int, required: bool) -> str | None:
    """The field's text, or raises ValueError saying why it is unacceptable."""
    if value is None:
        if required:
            raise ValueError(f"missing {name!r}")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name!r} must be a string, not {type(value).__name__}")
    if not value.strip():
        if required:
            raise ValueError(f"{name!r} is empty")
        return None
    if len(value) > max_chars:
        raise ValueError(f"{name!r} has {len(value)} characters; the limit is {max_chars}")
    if "\x00" in value:
        raise ValueError(f"{name!r} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name!r} is not valid Unicode text") from exc
    return value


def make_job(record: object, line: int | None, max_chars: int) -> NewJob:
    """A validated job from one parsed record ({"question": ..., "reference"/"answer": ...})."""
    if not isinstance(record, dict):
        raise ValueError(f"expected an object with a 'question' field, got {type(record).__name__}")
    question = check_text(record.get("question"), "question", max_chars, required=True)
    reference = record.get("reference", record.get("answer"))
    reference = check_text(reference, "reference", max_chars, required=False)
    assert question is not None
    return NewJob(question=question, reference=reference, line=line)


def read_bulk(path: Path, *, max_chars: int, max_items: int) -> Intake:
    """Parses a .jsonl or .csv file; each line stands or falls alone."""
    if not path.is_file():
        raise IntakeError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise IntakeError(f"{path}: unknown format {suffix or '(none)'}; use .jsonl or .csv")
    intake = Intake()
    records = jsonl_records(path) if suffix == ".jsonl" else csv_records(path)
    for line, record, problem in records:
        if problem is None:
            try:
                intake.jobs.append(make_job(record, line, max_chars))
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            intake.rejected.append((line, problem))
        if len(intake.jobs) > max_items:
            raise IntakeError(f"{path}: more than {max_items} jobs in one batch (CUBEQA_MAX_BATCH_ITEMS); split the file")
    return intake


def jsonl_records(path: Path) -> Iterator[tuple[int, object, str | None]]:
    """(line number, parsed object, problem) for each non-blank line; undecodable bytes fail that line only."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, None, f"not UTF-8 ({exc.reason} at byte {exc.start})"
                continue
            if not text.strip():
                continue
            try:
                yield number, json.loads(text), None
            except json.JSONDecodeError as exc:
                yield number, None, f"invalid JSON ({exc.msg} at column {exc.colno})"


def csv_records(path: Path) -> Iterator[tuple[int, object, str | None]]:
    """CSV with a header naming a 'question' column (and optionally 'reference' or 'answer')."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IntakeError(f"{path}:{line}: not UTF-8 ({exc.reason}); save the CSV as UTF-8") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "question" not in reader.fieldnames:
        raise IntakeError(f"{path}:1: the CSV header must name a 'question' column (found {reader.fieldnames})")
    for row in reader:
        line = reader.line_num
        if None in row:
            yield line, None, f"{len(row[None]) + len(reader.fieldnames)} fields; the header has {len(reader.fieldnames)}"
        elif all(not (v or "").strip() for v in row.values()):
            continue
        else:
            yield line, {k: (v if v != "" else None) for k, v in row.items()}, None
