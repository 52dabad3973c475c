"""Q→A pair files and their teacher embeddings, cached on disk by content hash."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from pipeline.errors import InputError

J = TypeVar("J")

Embed = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class QAPair:
    """One question with its reference answer sentence."""

    question: str
    answer: str
    answer_id: str


@dataclass(frozen=True)
class EmbeddedPairs:
    """Pairs with unit question vectors `q` (N, D) and answer vectors `a` (N, D)."""

    pairs: list[QAPair]
    q: np.ndarray
    a: np.ndarray
    data_hash: str

    @property
    def answer_ids(self) -> list[str]:
        return [p.answer_id for p in self.pairs]


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes, first 16 hex digits."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def texts_hash(texts: Sequence[str]) -> str:
    """Order-sensitive sha256 of a list of texts, first 16 hex digits."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def answer_key(answer: str) -> str:
    """Stable id of an answer sentence when a file gives none (sha1 of its normalised text)."""
    return hashlib.sha1(" ".join(answer.lower().split()).encode("utf-8")).hexdigest()[:12]


def numbered_lines(path: Path, error: type[Exception] = InputError) -> Iterator[tuple[int, str]]:
    """(line number, line) for the non-blank lines of a UTF-8 file; a bad encoding raises `error`.

    Splits on "\n" only: JSON strings may hold U+2028 and friends, which `splitlines` would cut.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise error(f"{path} is not UTF-8 text: {exc}") from exc
    return ((number, line) for number, line in enumerate(lines, start=1) if line.strip())


def json_value(line: str, where: str, kind: type[J], expected: str, error: type[Exception] = InputError) -> J:
    """One JSONL line's value, which must be a JSON `kind`; anything else raises `error` naming `where` (file:line)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(value, kind):
        raise error(f"{where}: a JSON {type(value).__name__}, expected {expected}")
    return value


def load_pairs(path: Path) -> list[QAPair]:
    """Read a JSONL file of {"question", "answer"[, "answer_id"]} objects.

    Raises:
        InputError: naming the file and line of the first malformed record.
    """
    pairs: list[QAPair] = []
    for number, line in numbered_lines(path):
        try:
            record = json.loads(line)
            question, answer = record["question"], record["answer"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{path}:{number}: not a JSON object with question and answer ({exc})") from exc
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"{path}:{number}: empty question")
        if not isinstance(answer, str) or not answer.strip():
            raise InputError(f"{path}:{number}: empty answer")
        pairs.append(QAPair(question, answer, str(record.get("answer_id") or answer_key(answer))))
    if not pairs:
        raise InputError(f"{path}: no Q→A pairs")
    return pairs


def embed_cached(texts: list[str], embed: Embed, cache_dir: Path | None, key: str) -> np.ndarray:
    """Embed texts, reusing `cache_dir/<key>-<texts hash>.npy` when present."""
    if cache_dir is None:
        return embed(texts)
    path = Path(cache_dir) / f"{key}-{texts_hash(texts)}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            cached = None  # a damaged cache file is a miss; it is rewritten below
        if cached is not None and cached.shape[0] == len(texts):
            return cached
    vectors = np.ascontiguousarray(embed(texts), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as handle:
        np.save(handle, vectors, allow_pickle=False)
    Path(handle.name).replace(path)  # atomic: concurrent runs never read a half-written file
    return vectors


def embed_pairs(pairs: list[QAPair], embed: Embed, *, cache_dir: Path | None, encoder_hash: str) -> EmbeddedPairs:
    """Embed the questions and (de-duplicated) answers of a list of pairs."""
    questions = [p.question for p in pairs]
    unique_answers = sorted({p.answer for p in pairs})
    q = embed_cached(questions, embed, cache_dir, f"enc-{encoder_hash}")
    bank = embed_cached(unique_answers, embed, cache_dir, f"enc-{encoder_hash}")
    row = {text: i for i, text in enumerate(unique_answers)}
    a = bank[[row[p.answer] for p in pairs]]
    return EmbeddedPairs(pairs=pairs, q=q, a=a, data_hash=texts_hash([f"{p.question}\t{p.answer}" for p in pairs]))
