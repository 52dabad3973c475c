"""The config defaults are the shipped bundle's configuration, so `cubeqa train` with no options retrains it."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import CubeConfig, TowerConfig, TowerTrainConfig, TrainConfig

SHIPPED = Path(__file__).resolve().parents[2] / "cubeqa" / "bundles" / "default" / "manifest.json"


def test_defaults_equal_the_shipped_bundles_recorded_config() -> None:
    manifest = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert CubeConfig().to_dict() == manifest["cube_config"]
    assert TrainConfig().to_dict() == manifest["train_config"]
    assert TowerConfig().to_dict() == manifest["tower"]["config"]
    assert TowerTrainConfig().to_dict() == manifest["tower"]["train_config"]


def test_the_train_command_defaults_come_from_the_configs() -> None:
    from cubeqa.train_cli import SHIPPED_CUBE, SHIPPED_TOWER, SHIPPED_TOWER_TRAIN, SHIPPED_TRAIN

    assert SHIPPED_CUBE == CubeConfig() and SHIPPED_TRAIN == TrainConfig()
    assert SHIPPED_TOWER == TowerConfig() and SHIPPED_TOWER_TRAIN == TowerTrainConfig()
