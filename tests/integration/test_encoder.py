"""The teacher encoder on its real weights, against sentence-transformers on the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import InputError
from pipeline.encoder import DEFAULT_MODEL_ID, default_model_dir
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

TEXTS = [
    "Where is kenya located?",
    "Kenya is a country in africa and a founding member of the east african community.",
    "What is a prime number?",
    "A prime number is a natural number greater than 1 that has no positive divisors other than 1 and itself.",
]


def test_matches_sentence_transformers_on_the_same_weights(encoder) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(default_model_dir()), device="cpu").encode(TEXTS, normalize_embeddings=True)
    ours = encoder.encode(TEXTS).vectors
    assert ours.dtype == np.float32 and ours.shape == (4, 384)
    assert np.allclose(ours, reference, atol=1e-5)


def test_batches_sorted_by_length_come_back_in_input_order(encoder) -> None:
    together = encoder.encode(TEXTS).vectors
    one_by_one = np.concatenate([encoder.encode([t]).vectors for t in TEXTS])
    assert np.allclose(together, one_by_one, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_long_input_is_truncated_and_says_so(encoder) -> None:
    long_text = "the rhine flows through six countries " * 200
    result = encoder.encode([long_text, "short question?"])
    assert result.truncated.tolist() == [True, False]
    assert np.isfinite(result.vectors).all()


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_text_is_an_input_error(encoder, bad: str) -> None:
    with pytest.raises(InputError, match="#1 is empty"):
        encoder.encode(["fine", bad])


def test_an_empty_decoded_text_is_embedded_as_a_full_stop(encoder) -> None:
    vectors = encoder.encode_generated(["", "nairobi is the capital of kenya.", "  "])
    expected = encoder.encode([".", "nairobi is the capital of kenya."]).vectors
    np.testing.assert_allclose(vectors, expected[[0, 1, 0]], atol=1e-6)


def test_undecodable_bytes_are_an_input_error(encoder) -> None:
    garbled = b"caf\xe9 \xff?".decode("utf-8", errors="surrogateescape")  # what argv holds for invalid UTF-8
    with pytest.raises(InputError, match="#0 is not valid Unicode"):
        encoder.encode([garbled])


def test_identity_names_model_dimension_and_weights(encoder) -> None:
    identity = encoder.identity
    assert identity.model_id == DEFAULT_MODEL_ID
    assert identity.dim == 384
    shipped = json.loads((ROOT / "cubeqa" / "bundles" / "default" / "manifest.json").read_text())["encoder"]
    assert identity.weights_hash == shipped["weights_hash"]  # the hash the shipped bundle was checked against


def test_threads_sharing_one_encoder_get_the_answers_of_one_thread(encoder) -> None:
    """A worker's pool threads share one model copy: concurrent calls must not mix up tokenizer state or rows."""
    from concurrent.futures import ThreadPoolExecutor

    lines = [f"{text} ({n})" for n in range(12) for text in TEXTS]  # 48 texts of mixed lengths
    alone = [encoder.encode(lines[i::6]).vectors for i in range(6)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        together = list(pool.map(lambda i: encoder.encode(lines[i::6]).vectors, range(6)))
    for one, many in zip(alone, together):
        assert np.allclose(one, many, atol=1e-5)
