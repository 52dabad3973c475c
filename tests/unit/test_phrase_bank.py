"""Phrase-bank search: exact hits, top-k order, the confidence threshold, HNSW."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import NO_CONFIDENT_ANSWER, InputError, PhraseBankConfig, PhraseBankDecoder
from pipeline.baselines import normalise


def bank(n: int = 50, dim: int = 16, config: PhraseBankConfig | None = None) -> PhraseBankDecoder:
    vectors = normalise(np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32))
    return PhraseBankDecoder([f"sentence {i}" for i in range(n)], vectors, config)


def test_a_bank_vector_finds_its_own_sentence_first() -> None:
    decoder = bank()
    answers = decoder.decode(decoder.vectors[[3, 17]], k=3)
    assert [a.text for a in answers] == ["sentence 3", "sentence 17"]
    assert answers[0].score == pytest.approx(1.0, abs=1e-5)
    scores = [c.score for c in answers[0].candidates]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3


def test_below_threshold_is_an_explicit_no_answer_with_its_score() -> None:
    decoder = bank(config=PhraseBankConfig(min_score=0.99))
    far = normalise(decoder.vectors[:2].sum(0, keepdims=True))
    answer = decoder.decode(far)[0]
    assert answer.path == "none"
    assert answer.text == NO_CONFIDENT_ANSWER
    assert answer.score < 0.99 and answer.candidates[0].text.startswith("sentence")


def test_hnsw_agrees_with_exact_search_on_a_small_bank() -> None:
    exact, approx = bank(200), bank(200, config=PhraseBankConfig(index="hnsw"))
    queries = normalise(exact.vectors[:20] + 0.1)
    assert [a.text for a in exact.decode(queries)] == [a.text for a in approx.decode(queries)]


def test_bad_banks_and_queries_are_refused() -> None:
    with pytest.raises(InputError, match="empty"):
        PhraseBankDecoder([], np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="texts"):
        PhraseBankDecoder(["a"], np.zeros((2, 4), np.float32))
    with pytest.raises(InputError, match=r"\(N, 16\)"):
        bank().search(np.zeros((1, 8), np.float32))
