"""FAISS index kinds of knowledge banks: automatic choice, overrides, neighbours found, files round-trip."""

from __future__ import annotations

import faiss  # a hard dependency: a broken install fails here instead of skipping
import numpy as np
import pytest

from pipeline.knowledge.index import (
    DEFAULTS,
    EXACT_MAX,
    HNSW_MAX,
    IndexSpec,
    apply_search_params,
    build_index,
    choose_index,
    load_index,
    save_index,
)

DIM = 32
SMALL = {  # parameters for 3,000 vectors of 32 dimensions; each kind's own code path, small enough to be fast
    "flat": {},
    "hnsw": {"m": 16, "ef_construction": 40, "ef_search": 32},
    "hnsw_sq8": {"m": 16, "ef_construction": 40, "ef_search": 32},
    "ivfpq": {"nlist": 16, "m": 8, "nbits": 6, "nprobe": 16},
}
RECALL_FLOOR = {"flat": 1.0, "hnsw": 0.95, "hnsw_sq8": 0.95, "ivfpq": 0.8}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3,000 unit vectors, 200 queries near some of them, and each query's exact best row."""
    rng = np.random.default_rng(0)
    vectors = unit(rng.standard_normal((3000, DIM)))
    queries = unit(vectors[rng.choice(3000, 200, replace=False)] + 0.05 * rng.standard_normal((200, DIM)))
    return vectors, queries, (queries @ vectors.T).argmax(axis=1)


def test_the_automatic_choice_follows_size() -> None:
    assert choose_index(EXACT_MAX - 1).kind == "flat"
    assert choose_index(EXACT_MAX).kind == "hnsw_sq8"
    assert choose_index(HNSW_MAX).kind == "hnsw_sq8"
    assert choose_index(HNSW_MAX + 1).kind == "ivfpq"
    assert choose_index(10, kind="hnsw").kind == "hnsw"
    assert choose_index(1_000_000).params == DEFAULTS["hnsw_sq8"]


def test_overrides_replace_defaults_and_bad_ones_are_refused() -> None:
    spec = choose_index(1_000_000, overrides={"ef_search": 200})
    assert spec.params == {**DEFAULTS["hnsw_sq8"], "ef_search": 200}
    with pytest.raises(ValueError, match="unknown hnsw_sq8 index parameter"):
        choose_index(1_000_000, overrides={"nprobe": 8})
    with pytest.raises(ValueError, match="positive integer"):
        choose_index(1_000_000, overrides={"ef_search": 0})
    with pytest.raises(ValueError, match="positive integer"):
        choose_index(1_000_000, overrides={"m": "32"})
    with pytest.raises(ValueError, match="nbits"):
        choose_index(10_000_000, overrides={"nbits": 20})
    with pytest.raises(ValueError, match="index kind must be one of"):
        choose_index(10, kind="lsh")


def test_ivfpq_refuses_a_code_size_that_does_not_divide_the_dimension(data) -> None:
    with pytest.raises(ValueError, match="must divide the vector dimension"):
        build_index(data[0], choose_index(3000, kind="ivfpq", overrides={**SMALL["ivfpq"], "m": 5}))


@pytest.mark.parametrize("kind", list(SMALL))
def test_each_kind_finds_the_exact_neighbours(kind: str, data) -> None:
    vectors, queries, truth = data
    spec = choose_index(len(vectors), kind=kind, overrides=SMALL[kind])
    added: list[int] = []
    index = build_index(vectors, spec, progress=added.append)
    assert index.ntotal == len(vectors) and sum(added) == len(vectors)
    scores, rows = index.search(queries, 1)
    assert np.mean(rows[:, 0] == truth) >= RECALL_FLOOR[kind]
    assert scores[0, 0] == pytest.approx(float(queries[0] @ vectors[rows[0, 0]]), abs=0.05)  # inner products, not distances


@pytest.mark.parametrize("kind", ["hnsw_sq8", "ivfpq"])
def test_save_and_load_keep_the_search_parameters(kind: str, data, tmp_path) -> None:
    vectors, queries, _ = data
    spec = choose_index(len(vectors), kind=kind, overrides={**SMALL[kind], **({"ef_search": 77} if "hnsw" in kind else {"nprobe": 3})})
    index = build_index(vectors, spec)
    save_index(index, tmp_path / "bank.faiss")
    loaded = load_index(tmp_path / "bank.faiss", IndexSpec.from_dict(spec.to_dict()))
    if kind == "hnsw_sq8":
        assert loaded.hnsw.efSearch == 77
    else:
        assert faiss.extract_index_ivf(loaded).nprobe == 3
    assert np.array_equal(loaded.search(queries, 5)[1], index.search(queries, 5)[1])


def test_search_parameters_are_applied_to_a_built_index(data) -> None:
    index = build_index(data[0], choose_index(3000, kind="hnsw", overrides=SMALL["hnsw"]))
    apply_search_params(index, IndexSpec("hnsw", {**SMALL["hnsw"], "ef_search": 9}))
    assert index.hnsw.efSearch == 9
