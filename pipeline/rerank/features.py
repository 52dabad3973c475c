"""Cheap features of (question, candidate sentence) pairs for the learning-to-rank model: microseconds each.

Per candidate of one question's fused top k: the search's own scores (fused, dense, lexical, overlap) and
ranks, their distance to the list's best, the teacher's own cosine of question and sentence (`identity`: the
question as the teacher embeds it, not the model's answer vector; it ranks differently and the two agree
when both are right), the IDF-weighted share of the question's terms the sentence
holds (rare words count more), the share of the question's word pairs it holds, the rarest question term
it misses, its length and novelty, and answer-type cues (a number for "how many", a year for "when", a
name for "who") beside the question's wh-type. Terms are the BM25 index's (stemmed, stop words dropped),
IDF from the bank's own index, so the features hold on any bank.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from pipeline.knowledge.fusion import Hits
from pipeline.knowledge.lexical import LexicalIndex, tokenize

QUESTION_TYPES = ("who", "whom", "whose", "when", "where", "why", "which", "how many", "how much", "how long",
                  "how", "what year", "what", "other")
NAMES = (
    "fused", "dense", "lexical", "overlap", "rank", "fused_gap", "dense_gap", "lexical_gap", "dense_rank",
    "lexical_rank", "idf_share", "pair_share", "missing_idf", "novel_share", "length", "question_length",
    "question_type", "has_number", "has_year", "has_month", "new_names", "identity", "identity_gap",
)
CATEGORICAL = ("question_type",)
YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})s?\b")
NUMBER = re.compile(r"\d")
MONTH = re.compile(r"\b(january|february|march|april|may|june|july|august|september|october|november|december)\b", re.I)
CAPITALISED = re.compile(r"(?<=\s)[A-Z][a-zA-Z]+")


def question_type(question: str) -> int:
    """Index in QUESTION_TYPES of the question's wh-phrase (the first one found, longest first)."""
    text = f" {question.lower()} "
    found = [(text.find(f" {t} "), -len(t), i) for i, t in enumerate(QUESTION_TYPES[:-1]) if f" {t} " in text]
    return min(found)[2] if found else len(QUESTION_TYPES) - 1


def idf_table(lexical: LexicalIndex) -> tuple[dict[str, int], np.ndarray, float]:
    """(vocab, IDF of each token id, IDF of a token the bank never saw) by BM25's formula over the bank's index."""
    df = np.diff(lexical.indptr).astype(np.float64)
    n = float(lexical.sentences)
    return lexical.vocab, np.log1p((n - df + 0.5) / (df + 0.5)), math.log1p((n + 0.5) / 0.5)


def ranks_of(values: np.ndarray) -> np.ndarray:
    """0-based rank of each value, highest first."""
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks


def pairs(tokens: Sequence[str]) -> set[tuple[str, str]]:
    return set(zip(tokens, tokens[1:]))


def hit_features(hits: Hits, questions: Sequence[str], teacher: np.ndarray | None, bank_texts: Sequence[str],
                 bank_vectors: np.ndarray, lexical: LexicalIndex | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, k, F) features of each question's first k candidates (NaN rows where the list is shorter) and (N, k)
    whether a candidate is there. `teacher`: the questions' teacher vectors (N, D), None: identity features missing."""
    n = len(questions)
    k = min(k, hits.rows.shape[1])
    out = np.full((n, k, len(NAMES)), np.nan, dtype=np.float32)
    present = hits.rows[:, :k] >= 0
    vocab, idf, unseen = idf_table(lexical) if lexical is not None else ({}, np.zeros(0), 0.0)
    wanted = sorted({int(r) for r in hits.rows[:, :k][present]})
    tokens_of = dict(zip(wanted, tokenize([bank_texts[r] for r in wanted]))) if wanted else {}
    question_tokens = tokenize(questions)
    zeros = np.zeros_like(hits.dense)
    lexical_scores = zeros if hits.lexical is None else hits.lexical
    overlap = zeros if hits.overlap is None else hits.overlap
    for i in range(n):
        m = int(present[i].sum())
        if m == 0:
            continue
        fused, dense, lex = hits.scores[i, :m], hits.dense[i, :m], lexical_scores[i, :m]
        q_tokens = question_tokens[i]
        q_set = set(q_tokens)
        weight = {t: float(idf[vocab[t]]) if t in vocab else unseen for t in q_set}
        total = sum(weight.values()) or 1.0
        q_pairs = pairs(q_tokens)
        qtype = question_type(questions[i])
        for j in range(m):
            row = int(hits.rows[i, j])
            text = bank_texts[row]
            s_tokens = tokens_of[row]
            s_set = set(s_tokens)
            missing = [weight[t] for t in q_set - s_set]
            out[i, j] = (
                fused[j], dense[j], lex[j], overlap[i, j], j, fused[0] - fused[j], dense.max() - dense[j],
                lex.max() - lex[j], 0.0, 0.0,
                sum(weight[t] for t in q_set & s_set) / total,
                len(q_pairs & pairs(s_tokens)) / len(q_pairs) if q_pairs else 0.0,
                max(missing) if missing else 0.0,
                len(s_set - q_set) / len(s_set) if s_set else 0.0,
                math.log1p(len(s_tokens)), math.log1p(len(q_tokens)), qtype,
                bool(NUMBER.search(text)), bool(YEAR.search(text)), bool(MONTH.search(text)),
                sum(1 for w in CAPITALISED.findall(text) if w.lower() not in questions[i].lower()), np.nan, np.nan,
            )
        out[i, :m, NAMES.index("dense_rank")] = ranks_of(dense)
        out[i, :m, NAMES.index("lexical_rank")] = ranks_of(lex)
        if teacher is not None:
            identity = bank_vectors[hits.rows[i, :m]] @ teacher[i]
            out[i, :m, NAMES.index("identity")] = identity
            out[i, :m, NAMES.index("identity_gap")] = identity.max() - identity
    return out, present
