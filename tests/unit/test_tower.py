"""The question tower: identity at step 0, the shared-layer split, training, save/load and the encoder check."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.data import EmbeddedPairs, QAPair, load_pairs
from pipeline.encoder import EncoderIdentity
from pipeline.errors import BundleError, IncompatibleBundle
from pipeline.tower import LoRALinear, QuestionTower, TowerConfig
from pipeline.tower_io import CONFIG, load_tower, save_tower
from pipeline.training.tower_trainer import (
    LowerStates,
    TowerTrainConfig,
    lower_states,
    lr_factor,
    tower_vectors,
    train_tower,
)

DATA = Path(__file__).resolve().parents[2] / "data"


def tiny_encoder(weights_hash: str = "a" * 16, seed: int = 0) -> SimpleNamespace:
    """A randomly initialised 3-layer BERT standing in for the teacher where no tokenizer is needed."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
    model = BertModel(config, add_pooling_layer=False).eval()
    return SimpleNamespace(model=model, device=torch.device("cpu"), identity=EncoderIdentity("tiny", 16, weights_hash))


def random_states(n: int, dim: int, seed: int) -> LowerStates:
    """Lower-layer states of n texts of 3-9 tokens each."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 10, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return LowerStates(torch.from_numpy(rng.normal(size=(int(offsets[-1]), dim)).astype(np.float32)), torch.from_numpy(offsets))


def test_config_refuses_bad_values_and_round_trips() -> None:
    with pytest.raises(ValueError):
        TowerConfig(layers=0)
    with pytest.raises(ValueError):
        TowerConfig(lora_rank=0)
    config = TowerConfig(layers=1, lora_rank=4)
    assert TowerConfig.from_dict(config.to_dict()) == config


def test_tower_deeper_than_the_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="3"):
        QuestionTower(tiny_encoder(), TowerConfig(layers=4))


def test_state_dict_holds_the_tuned_layers_only() -> None:
    tower = QuestionTower(tiny_encoder(), TowerConfig(layers=2))
    assert tower.split == 1
    assert {name.split(".")[0] for name in tower.state_dict()} == {"top"}
    tuned = sum(p.numel() for p in tower.parameters())
    per_layer = sum(p.numel() for p in tower.encoder.model.encoder.layer[0].parameters())
    assert tuned == 2 * per_layer


def test_lora_starts_as_its_base_map_and_trains_only_the_adapters() -> None:
    base = torch.nn.Linear(8, 5)
    lora = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(3, 8)
    assert torch.equal(lora(x), base(x))
    assert [name for name, p in lora.named_parameters() if p.requires_grad] == ["lora_a", "lora_b"]
    tower = QuestionTower(tiny_encoder(), TowerConfig(layers=1, lora_rank=2))
    assert all("lora_" in name for name, p in tower.named_parameters() if p.requires_grad)


def test_tuned_and_frozen_tops_agree_at_step_zero_and_padding_does_not_matter() -> None:
    tower = QuestionTower(tiny_encoder(), TowerConfig(layers=2))
    states = random_states(5, 16, seed=1)
    hidden, mask = states.batch([0, 1, 2, 3, 4])
    with torch.inference_mode():
        tuned = tower.run_top(hidden, mask, tuned=True)
        frozen = tower.run_top(hidden, mask, tuned=False)
        alone = torch.cat([tower.run_top(*states.batch([i]), tuned=True) for i in range(5)])
    assert torch.equal(tuned, frozen)
    assert torch.allclose(tuned, alone, atol=1e-6)  # zero padding is masked out of attention and pooling


def test_schedule_warms_up_then_decays_linearly_to_zero() -> None:
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == 0.0


def test_save_load_round_trip(tmp_path: Path) -> None:
    encoder = tiny_encoder()
    tower = QuestionTower(encoder, TowerConfig(layers=2))
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(0.01 * torch.randn_like(p))
    record = save_tower(tmp_path / "t", tower, {"note": "x"})
    assert record["encoder"]["weights_hash"] == "a" * 16 and record["note"] == "x"
    loaded = load_tower(tmp_path / "t", encoder)
    assert loaded.config == tower.config
    for (name, p), (_, q) in zip(tower.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), name
    states = random_states(4, 16, seed=2)
    assert np.array_equal(tower_vectors(tower, states), tower_vectors(loaded, states))


def test_tower_of_another_encoder_is_refused_naming_both(tmp_path: Path) -> None:
    save_tower(tmp_path / "t", QuestionTower(tiny_encoder("a" * 16), TowerConfig(layers=1)))
    with pytest.raises(IncompatibleBundle, match=f"{'a' * 16}.*{'b' * 16}"):
        load_tower(tmp_path / "t", tiny_encoder("b" * 16))


def test_missing_or_broken_tower_files_are_bundle_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=CONFIG):
        load_tower(tmp_path, tiny_encoder())
    save_tower(tmp_path / "t", QuestionTower(tiny_encoder(), TowerConfig(layers=1)))
    with pytest.raises(BundleError, match="does not fit"):
        load_tower(tmp_path / "t", reshaped_tiny_encoder())


def reshaped_tiny_encoder() -> SimpleNamespace:
    """The tiny teacher with wider feed-forward layers, which a saved tower's weights do not fit."""
    encoder = tiny_encoder()
    for layer in encoder.model.encoder.layer:
        layer.intermediate.dense = torch.nn.Linear(16, 48)
    return encoder


def test_tiny_training_run_lowers_the_loss() -> None:
    rng = np.random.default_rng(0)
    n, dim = 64, 16
    answers = rng.normal(size=(16, dim)).astype(np.float32)
    answers /= np.linalg.norm(answers, axis=1, keepdims=True)
    which = np.arange(n) % 16
    pairs = [QAPair(f"q{i}", f"a{which[i]}", f"a{which[i]}") for i in range(n)]
    states = random_states(n, dim, seed=3)
    tower = QuestionTower(tiny_encoder(), TowerConfig(layers=2))
    q = tower_vectors(tower, states)
    data = EmbeddedPairs(pairs=pairs, q=q, a=answers[which], data_hash="tiny")
    losses: list[float] = []
    epochs = train_tower(tower, data, states, TowerTrainConfig(epochs=20, batch_size=16, lr=1e-2, threads=1), val=data, val_states=states, on_step=lambda s, total, loss: losses.append(loss))
    assert len(losses) == 20 * 4
    assert epochs[-1].train_loss < 0.8 * epochs[0].train_loss
    assert epochs[-1].validation["cos"] > epochs[0].validation["cos"]


# ---------------------------------------------------------------- on the real teacher


@pytest.fixture(scope="module")
def questions() -> list[str]:
    return [pair.question for pair in load_pairs(DATA / "squad_sent_val.jsonl")[:24]]


@pytest.mark.slow
def test_tower_at_step_zero_is_exactly_the_teacher(encoder, questions: list[str]) -> None:  # TeacherEncoder
    tower = QuestionTower(encoder, TowerConfig(layers=2))
    both = tower.encode_both(questions, batch_size=16)
    expected = torch.from_numpy(encoder.encode(questions).vectors)
    assert torch.allclose(torch.from_numpy(both.teacher), expected, atol=1e-6)
    assert torch.allclose(torch.from_numpy(both.tower), expected, atol=1e-6)


@pytest.mark.slow
def test_shared_layer_split_equals_the_full_forward_pass(encoder, questions: list[str], tmp_path: Path) -> None:
    tower = QuestionTower(encoder, TowerConfig(layers=2))
    states = lower_states(tower, questions, cache_dir=tmp_path)
    again = lower_states(tower, questions, cache_dir=tmp_path)  # read back from the safetensors cache
    assert torch.equal(states.states, again.states) and torch.equal(states.offsets, again.offsets)
    expected = torch.from_numpy(encoder.encode(questions).vectors)
    assert torch.allclose(torch.from_numpy(tower_vectors(tower, states)), expected, atol=1e-6)


@pytest.mark.slow
def test_tiny_run_on_real_pairs_lowers_the_loss_and_survives_save_load(encoder, tmp_path: Path) -> None:
    from pipeline.data import embed_pairs

    pairs = load_pairs(DATA / "squad_sent_val.jsonl")[:32]
    data = embed_pairs(pairs, lambda texts: encoder.encode(texts).vectors, cache_dir=None, encoder_hash=encoder.identity.weights_hash)
    tower = QuestionTower(encoder, TowerConfig(layers=1))
    states = lower_states(tower, [p.question for p in pairs])
    epochs = train_tower(tower, data, states, TowerTrainConfig(epochs=3, batch_size=16, lr=2e-4, threads=1))
    assert epochs[-1].train_loss < epochs[0].train_loss
    save_tower(tmp_path / "t", tower)
    loaded = load_tower(tmp_path / "t", encoder)
    questions = [p.question for p in pairs[:8]]
    assert np.allclose(loaded.encode_both(questions).tower, tower_vectors(tower, states)[:8], atol=1e-6)
