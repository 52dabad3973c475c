"""The cube trainer: duplicate-aware InfoNCE, schedule, and a tiny run that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import Cube, CubeConfig, EmbeddedPairs, QAPair, TrainConfig, apply_map
from pipeline.baselines import normalise
from pipeline.training.cube_trainer import answer_labels, infonce, lr_factor, train_cube


def test_answer_labels_group_shared_answers() -> None:
    labels, first = answer_labels(["a", "b", "a", "c"])
    assert labels.tolist() == [0, 1, 0, 2]
    assert first.tolist() == [0, 1, 3]


def test_infonce_ignores_other_copies_of_the_true_answer() -> None:
    out = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # two rows share one answer
    shared = infonce(out, targets, torch.tensor([0, 0]), torch.tensor([0, 0]), tau=0.05)
    assert shared.item() < 1e-6  # the duplicate is masked, not a negative
    distinct = infonce(out, targets, torch.tensor([0, 1]), torch.tensor([0, 1]), tau=0.05)
    assert distinct.item() > 0.5  # an identical negative with another id costs log 2


def test_schedule_warms_up_then_decays_to_zero() -> None:
    assert lr_factor(0, 100, 10) == 0.1
    assert lr_factor(9, 100, 10) == 1.0
    assert lr_factor(99, 100, 10) < 0.01


def shifted_pairs(n: int, seed: int) -> EmbeddedPairs:
    rng = np.random.default_rng(seed)
    dim = 18
    q = normalise(rng.normal(size=(n, dim)).astype(np.float32))
    rotation = np.roll(np.eye(dim, dtype=np.float32), 1, axis=1)
    a = normalise(q @ rotation * 0.6 + q * 0.4 + 0.3)
    pairs = [QAPair(f"q{i}", f"a{i}", f"{seed}-{i}") for i in range(n)]
    return EmbeddedPairs(pairs=pairs, q=q, a=a, data_hash=str(seed))


def test_a_tiny_cube_learns_a_question_dependent_map() -> None:
    train, val = shifted_pairs(512, 0), shifted_pairs(128, 1)
    cube = Cube(CubeConfig(dim=18, size=(3, 3, 2), channels=8, hidden=32, steps=2))
    reports = train_cube(cube, train, TrainConfig(epochs=15, batch_size=64, lr=3e-3, residual_l2=0.0, threads=1), val=val)
    identity = float((val.q * val.a).sum(-1).mean())
    assert reports[-1].train_loss < reports[0].train_loss
    assert reports[-1].val_cos is not None and reports[-1].val_cos > identity + 0.05
    learned = apply_map(cube, val.q)
    shift_only = normalise(val.q + (train.a.mean(0) - train.q.mean(0)))
    assert (learned * val.a).sum(-1).mean() > (shift_only * val.a).sum(-1).mean()


def test_training_is_reproducible_with_a_seed() -> None:
    train = shifted_pairs(128, 2)
    config = TrainConfig(epochs=2, batch_size=32, threads=1, seed=7)
    cubes = []
    for _ in range(2):
        torch.manual_seed(7)
        cube = Cube(CubeConfig(dim=18, size=(3, 3, 2), channels=4, hidden=8))
        train_cube(cube, train, config)
        cubes.append(cube)
    assert cubes[0].gate.item() != 0.0
    for a, b in zip(cubes[0].state_dict().values(), cubes[1].state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("option", [{"bank_negatives": True}, {"input_noise": 0.2}, {"ema": 0.9}])
def test_training_options_still_learn(option: dict) -> None:
    train, val = shifted_pairs(512, 3), shifted_pairs(128, 4)
    cube = Cube(CubeConfig(dim=18, size=(3, 3, 2), channels=8, hidden=32, steps=2))
    reports = train_cube(cube, train, TrainConfig(epochs=10, batch_size=64, lr=3e-3, residual_l2=0.0, threads=1, **option), val=val)
    identity = float((val.q * val.a).sum(-1).mean())
    final = float((apply_map(cube, val.q) * val.a).sum(-1).mean())
    assert final > identity + 0.05
    assert reports[-1].val_cos == pytest.approx(final, abs=1e-5)  # the reported model is the returned one


def test_ema_returns_the_averaged_weights() -> None:
    train = shifted_pairs(256, 5)
    config = TrainConfig(epochs=3, batch_size=64, lr=3e-3, threads=1, seed=1)
    torch.manual_seed(1)
    live = Cube(CubeConfig(dim=18, size=(3, 3, 2), channels=4, hidden=8))
    torch.manual_seed(1)
    averaged = Cube(CubeConfig(dim=18, size=(3, 3, 2), channels=4, hidden=8))
    train_cube(live, train, config)
    train_cube(averaged, train, TrainConfig(**{**config.to_dict(), "ema": 0.9}))
    assert not torch.equal(live.readout.weight, averaged.readout.weight)
