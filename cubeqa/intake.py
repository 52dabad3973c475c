"""Validates input jobs, for the API and the CLI alike, and reads bulk files (JSONL or CSV) into them.

A bad line of a file is reported with its number and skipped; a bad API item is refused naming its field.
A JSONL record (or API item) may add `alt_answers`, other sentences that count as right beside its reference.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from storage.hooks import Callback
from storage.models import KEY_LENGTH, URL_LENGTH
from storage.repository import NewJob
from tasks.hooks import HookPolicy, UnsafeCallback, check_callback
from tasks.wire import MAX_MICRO_BATCH

__all__ = [
    "MAX_ALT_ANSWERS", "MAX_MICRO_BATCH", "FieldError", "Intake", "IntakeError", "TooManyItems", "check_alternatives",
    "check_callback_url", "check_count", "check_key", "item_problems", "read_bulk",
]

MAX_ALT_ANSWERS = 20  # alternative references one job may carry
ALT = "alt_answers"  # the input field of the alternatives (as in Q→A records: pipeline.bank_eval)
WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


class IntakeError(Exception):
    """The whole file is unusable (missing, unknown format, wrong encoding, unreadable CSV, too many jobs)."""


class TooManyItems(IntakeError):
    """More jobs than one batch may hold."""


class FieldError(ValueError):
    """One field of one item is unacceptable; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Intake:
    """Accepted jobs and rejected lines, in file order."""

    jobs: list[NewJob] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def check_characters(value: str, name: str) -> None:
    """Raises ValueError when the text holds a NUL or is not valid Unicode (lone surrogates: PostgreSQL,
    msgpack and the tokenizer refuse both)."""
    if "\x00" in value:
        raise ValueError(f"{name!r} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name!r} is not valid Unicode text ({exc.reason} at position {exc.start})") from exc


def check_key(key: str) -> str:
    """An idempotency key the store can hold, or raises ValueError saying why not."""
    if not key.strip():
        raise ValueError("the key is empty")
    if len(key) > KEY_LENGTH:
        raise ValueError(f"the key has {len(key)} characters; the limit is {KEY_LENGTH}")
    check_characters(key, "key")
    return key


def check_callback_url(url: str | None, policy: HookPolicy, *, each_job: bool = False) -> Callback | None:
    """The submission's callback (None without a URL), once its length, characters, scheme and every address its host
    resolves to pass (tasks.hooks.check_callback); raises UnsafeCallback saying why not."""
    if url is None:
        return None
    if len(url) > URL_LENGTH:
        raise UnsafeCallback(f"the callback URL has {len(url)} characters; the limit is {URL_LENGTH}")
    try:
        check_characters(url, "callback URL")
    except ValueError as exc:
        raise UnsafeCallback(str(exc)) from exc
    check_callback(url, policy)
    return Callback(url, each_job=each_job)


def check_count(count: int, max_items: int) -> None:
    """Raises TooManyItems when `count` jobs would not fit in one batch."""
    if count > max_items:
        raise TooManyItems(f"{count} items; a batch holds at most {max_items} (CUBEQA_MAX_BATCH_ITEMS)")


def check_text(value: object, name: str, max_chars: int, required: bool) -> str | None:
    """The field's text (None for an absent or blank optional one), or raises FieldError saying why it is unacceptable."""
    if value is None:
        if required:
            raise FieldError(name, f"missing {name!r}")
        return None
    if not isinstance(value, str):
        raise FieldError(name, f"{name!r} must be a string, not {type(value).__name__}")
    if not value.strip():
        if required:
            raise FieldError(name, f"{name!r} is empty")
        return None
    if len(value) > max_chars:
        raise FieldError(name, f"{name!r} has {len(value)} characters; the limit is {max_chars}")
    try:
        check_characters(value, name)
    except ValueError as exc:
        raise FieldError(name, str(exc)) from exc
    return value


def check_alternatives(value: object, max_chars: int) -> tuple[str, ...] | None:
    """The alternative references (None for an absent or empty list), each checked as a reference is, or raises
    FieldError naming `alt_answers` and, for one bad sentence, its index."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise FieldError(ALT, f"{ALT!r} must be a list of strings, not {type(value).__name__}")
    if len(value) > MAX_ALT_ANSWERS:
        raise FieldError(ALT, f"{ALT!r} holds {len(value)} sentences; the limit is {MAX_ALT_ANSWERS}")
    checked: list[str] = []
    for i, text in enumerate(value):
        try:
            sentence = check_text(text, f"{ALT}[{i}]", max_chars, required=True)
        except FieldError as exc:
            raise FieldError(ALT, str(exc)) from exc
        assert sentence is not None  # required
        checked.append(sentence)
    return tuple(checked) or None


def item_problems(
    question: object, reference: object, max_chars: int, line: int | None = None, *, alt_answers: object = None,
) -> NewJob | list[FieldError]:
    """The job these fields make, or every field's problem (question first): the one check of API and CLI input."""
    problems: list[FieldError] = []
    checked: dict[str, str | None] = {}
    for name, value, required in (("question", question, True), ("reference", reference, False)):
        try:
            checked[name] = check_text(value, name, max_chars, required)
        except FieldError as exc:
            problems.append(exc)
    alternatives = None
    try:
        alternatives = check_alternatives(alt_answers, max_chars)
    except FieldError as exc:
        problems.append(exc)
    if alternatives and "reference" in checked and checked["reference"] is None:
        problems.append(FieldError(ALT, f"{ALT!r} needs a 'reference': the alternatives count as right beside it"))
    if problems:
        return problems
    question_text = checked["question"]
    assert question_text is not None  # required
    return NewJob(question=question_text, reference=checked["reference"], line=line, alt_references=alternatives)


def make_job(record: object, line: int | None, max_chars: int) -> NewJob:
    """A validated job from one parsed record ({"question": ..., "reference"/"answer": ..., "alt_answers": [...]});
    raises its first problem."""
    if not isinstance(record, dict):
        raise ValueError(f"expected an object with a 'question' field, got {type(record).__name__}")
    reference = record.get("reference", record.get("answer"))
    job = item_problems(record.get("question"), reference, max_chars, line, alt_answers=record.get(ALT))
    if isinstance(job, list):
        raise job[0]
    return job


def read_bulk(path: Path, *, max_chars: int, max_items: int) -> Intake:
    """Parses a .jsonl or .csv file; each line stands or falls alone."""
    if not path.is_file():
        raise IntakeError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise IntakeError(f"{path}: unknown format {suffix or '(none)'}; use .jsonl or .csv")
    with path.open("rb") as handle:
        start = handle.read(4)
    for bom, encoding in WIDE_BOMS.items():
        if start.startswith(bom):
            raise IntakeError(f"{path}: the file is {encoding} (it starts with a {encoding} byte-order mark); save it as UTF-8")
    if b"\x00" in start:
        raise IntakeError(f"{path}: NUL bytes at the start of the file: UTF-16 or UTF-32 text? save it as UTF-8")
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
            raise TooManyItems(
                f"{path}:{line}: more than {max_items} jobs by this line; a batch holds at most {max_items} "
                "(CUBEQA_MAX_BATCH_ITEMS): split the file (nothing was submitted)"
            )
    return intake


def jsonl_records(path: Path) -> Iterator[tuple[int, object, str | None]]:
    """(line number, parsed object, problem) for each non-blank line; undecodable bytes fail that line only."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark may open the file
            except UnicodeDecodeError as exc:
                yield number, None, f"not UTF-8 ({exc.reason} at byte {exc.start})"
                continue
            if not text.strip():
                continue
            try:  # without its line break: an error at the end of the line is reported at its own column
                yield number, json.loads(text.rstrip("\r\n")), None
            except json.JSONDecodeError as exc:
                yield number, None, f"invalid JSON ({exc.msg} at column {exc.colno})"
            except RecursionError:
                yield number, None, "invalid JSON (nested too deeply)"


def csv_records(path: Path) -> Iterator[tuple[int, object, str | None]]:
    """CSV with a header naming a 'question' column (and optionally 'reference' or 'answer'; no 'alt_answers')."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IntakeError(f"{path}:{line}: not UTF-8 ({exc.reason}); save the CSV as UTF-8") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows = iter(reader)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise IntakeError(f"{path}:1: unreadable CSV header ({exc})") from exc
    if not fieldnames or "question" not in fieldnames:
        raise IntakeError(f"{path}:1: the CSV header must name a 'question' column (found {fieldnames})")
    if ALT in fieldnames:  # a list has no CSV form here, and a column ignored would look as if it counted
        raise IntakeError(f"{path}:1: the CSV header names {ALT!r}: alternative references are read from JSONL only (a list per line)")
    while True:
        start = reader.line_num + 1
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:  # the parser cannot find the next record reliably: the whole file is refused
            raise IntakeError(
                f"{path}:{start}: unreadable CSV record starting on this line ({exc}); check its quotes (nothing was submitted)"
            ) from exc
        line = reader.line_num
        if None in row:
            yield line, None, f"{len(row[None]) + len(fieldnames)} fields; the header has {len(fieldnames)}"
        elif all(not (v or "").strip() for v in row.values()):
            continue
        else:
            yield line, {k: (v if v != "" else None) for k, v in row.items()}, None
