"""The CUDA-only encoder options (fp16 weights, pinned-memory copies) are guarded: on CPU they change nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import EncoderConfig, TeacherEncoder
from pipeline.encoder import to_device


def test_a_cpu_batch_is_left_where_it_is() -> None:
    tokens = {"input_ids": torch.tensor([[101, 2054, 102]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    moved = to_device(tokens, torch.device("cpu"))
    assert set(moved) == set(tokens)
    assert all(moved[name] is tokens[name] and not moved[name].is_pinned() for name in tokens)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_batch_arrives_on_the_device() -> None:
    tokens = {"input_ids": torch.tensor([[101, 2054, 102]])}
    moved = to_device(tokens, torch.device("cuda"))
    assert moved["input_ids"].device.type == "cuda" and torch.equal(moved["input_ids"].cpu(), tokens["input_ids"])


def test_the_setting_reaches_the_encoder_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from cubeqa.settings import Settings
    from cubeqa.wiring import encoder_config

    monkeypatch.setenv("CUBEQA_HALF_PRECISION", "true")
    assert encoder_config(Settings()).half_precision is True


@pytest.mark.slow
def test_half_precision_is_ignored_on_cpu(encoder) -> None:
    half = TeacherEncoder(EncoderConfig(device="cpu", half_precision=True))
    assert next(half.model.parameters()).dtype == torch.float32
    texts = ["Where is Kenya located?", "What year did building begin?"]
    np.testing.assert_allclose(half.encode(texts).vectors, encoder.encode(texts).vectors, atol=1e-6)
