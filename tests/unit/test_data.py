"""Pair files, bank files and the embedding cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import InputError, load_pairs
from pipeline.data import answer_key, embed_cached, json_value
from pipeline.errors import BundleError
from pipeline.workflows import read_bank_file


def test_pairs_load_with_answer_ids_and_bad_lines_are_named(tmp_path: Path) -> None:
    good = tmp_path / "pairs.jsonl"
    good.write_text(
        json.dumps({"question": "Who?", "answer": "Someone.", "answer_id": "a1"}) + "\n\n"
        + json.dumps({"question": "Why\u2028not?", "answer": "Because."}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    pairs = load_pairs(good)
    assert [p.answer_id for p in pairs] == ["a1", answer_key("Because.")]
    assert pairs[1].question == "Why\u2028not?"  # a Unicode line separator inside a string is not a line break
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "ok?", "answer": "ok"}) + "\n" + '{"question": "no answer"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:2"):
        load_pairs(bad)
    empty_answer = tmp_path / "empty.jsonl"
    empty_answer.write_text(json.dumps({"question": "q?", "answer": "  "}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty answer"):
        load_pairs(empty_answer)
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"question": "caf\xe9?", "answer": "x"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_pairs(latin1)


def test_bank_files_in_text_and_jsonl(tmp_path: Path) -> None:
    text = tmp_path / "bank.txt"
    text.write_text("First sentence.\n\n  Second sentence.  \n", encoding="utf-8")
    assert read_bank_file(text) == ["First sentence.", "Second sentence."]
    jsonl = tmp_path / "bank.jsonl"
    jsonl.write_text(json.dumps({"answer": "A."}) + "\n" + json.dumps({"text": "B."}) + "\n", encoding="utf-8")
    assert read_bank_file(jsonl) == ["A.", "B."]
    jsonl.write_text(json.dumps({"other": "C."}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="bank.jsonl:1"):
        read_bank_file(jsonl)


def test_a_json_line_must_parse_and_be_of_the_asked_kind() -> None:
    assert json_value('{"text": "a"}', "f:1", dict, "an object") == {"text": "a"}
    with pytest.raises(InputError, match=r"^f:2: not valid JSON \("):
        json_value("{not json", "f:2", dict, "an object")
    with pytest.raises(BundleError, match=r"^bank.jsonl:3: a JSON int, expected a string$"):
        json_value("7", "bank.jsonl:3", str, "a string", BundleError)


def test_embedding_cache_is_keyed_by_texts_and_survives_damage(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.full((len(texts), 4), float(len(calls)), np.float32)

    first = embed_cached(["a", "b"], embed, tmp_path, "enc-x")
    again = embed_cached(["a", "b"], embed, tmp_path, "enc-x")
    assert len(calls) == 1 and np.array_equal(first, again)
    embed_cached(["a", "c"], embed, tmp_path, "enc-x")
    embed_cached(["a", "b"], embed, tmp_path, "enc-y")  # another encoder hash is another entry
    assert len(calls) == 3
    for cached in tmp_path.glob("enc-x-*.npy"):
        cached.write_bytes(b"damaged")
    repaired = embed_cached(["a", "b"], embed, tmp_path, "enc-x")
    assert len(calls) == 4 and repaired[0, 0] == 4.0
    assert not list(tmp_path.glob("*.tmp*"))
