"""Trains each cube configuration of a list with its fixed schedule and prints validation figures.

The record of how the default configuration was chosen (validation split only):
mean cube_cos, and paired differences with 95% bootstrap intervals against the
identity and mean-shift baselines for cosine, open-bank R@1 and MRR.

    .venv/bin/python bench/cube_sweep.py                # every configuration below (~15 min on 2 cores)
    .venv/bin/python bench/cube_sweep.py --only "default: 8x8x2 C=64" --seeds 0,1,2
    .venv/bin/python bench/cube_sweep.py --limit 300 --only "4x4x2 C=16"   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from pipeline import Cube, CubeConfig, EmbeddedPairs, TeacherEncoder, TrainConfig, apply_map, evaluate, load_pairs
from pipeline.data import embed_pairs
from pipeline.training.cube_trainer import train_cube
from pipeline.workflows import embedder

ROOT = Path(__file__).resolve().parents[1]
FACE_8 = {"size": (8, 8, 2), "hidden": 64, "steps": 2}

# name -> (cube config, train config overrides); "default" is what `cubeqa train` uses.
CONFIGS: dict[str, tuple[dict, dict]] = {
    "default: 8x8x2 C=64": ({**FACE_8, "channels": 64}, {"epochs": 4, "lr": 1e-4}),
    "8x8x2 C=32": ({**FACE_8, "channels": 32}, {"epochs": 4, "lr": 1e-4}),
    "8x8x2 C=16": ({**FACE_8, "channels": 16}, {"epochs": 4, "lr": 1e-4}),
    "4x4x2 C=16": ({**FACE_8, "size": (4, 4, 2), "channels": 16}, {"epochs": 4, "lr": 1e-4}),
    "8x8x4 T=4 C=16": ({**FACE_8, "size": (8, 8, 4), "steps": 4, "channels": 16}, {"epochs": 4, "lr": 1e-4}),
    "8x8x2 C=16 exact injection": ({**FACE_8, "channels": 16, "injection": "exact"}, {"epochs": 8, "lr": 1e-4}),
    "8x8x2 C=16 lr 1e-3, 8 epochs": ({**FACE_8, "channels": 16}, {"epochs": 8, "lr": 1e-3}),
    "8x8x2 C=32 InfoNCE 0.5 L2 0.1": ({**FACE_8, "channels": 32}, {"epochs": 4, "lr": 1e-4, "infonce_weight": 0.5, "residual_l2": 0.1}),
    "8x8x2 C=32 InfoNCE 1.0 L2 0.1": ({**FACE_8, "channels": 32}, {"epochs": 4, "lr": 1e-4, "infonce_weight": 1.0, "residual_l2": 0.1}),
    "C=32 InfoNCE 1.0 L2 0.1 batch 1024": (
        {**FACE_8, "channels": 32},
        {"epochs": 4, "lr": 4e-4, "batch_size": 1024, "infonce_weight": 1.0, "residual_l2": 0.1},
    ),
    "C=64 InfoNCE 0.5 batch 1024": ({**FACE_8, "channels": 64}, {"epochs": 4, "lr": 4e-4, "batch_size": 1024, "infonce_weight": 0.5}),
}


def load(path: Path, encoder: TeacherEncoder, cache_dir: Path, limit: int | None) -> EmbeddedPairs:
    """The first `limit` pairs of a file (all when None), embedded with the cache."""
    pairs = load_pairs(path)[:limit] if limit else load_pairs(path)
    return embed_pairs(pairs, embedder(encoder, path.name, None), cache_dir=cache_dir, encoder_hash=encoder.identity.weights_hash)


def run(name: str, seed: int, train: EmbeddedPairs, val: EmbeddedPairs, resamples: int) -> dict[str, object]:
    cube_fields, train_fields = CONFIGS[name]
    torch.manual_seed(seed)
    cube = Cube(CubeConfig(**cube_fields))
    started = time.perf_counter()
    # the sweep's configurations are the pre-tower cube's, trained with in-batch negatives
    train_cube(cube, train, TrainConfig(**{"bank_negatives": False, **train_fields, "seed": seed, "threads": 2}))
    seconds = time.perf_counter() - started
    report = evaluate(lambda q: apply_map(cube, q), train, val, resamples=resamples)
    row: dict[str, object] = {"config": name, "seed": seed, "train_seconds": round(seconds, 1), "cube_cos": report.cos["cube_cos"]}
    for label, key in (("vs identity", "cube − identity"), ("vs mean shift", "cube − mean_shift")):
        for metric in ("cos", "R@1", "MRR"):
            interval = report.differences[f"{key}: {metric}"]
            row[f"{metric} {label}"] = interval.to_dict()
    return row


def cell(interval: dict[str, float]) -> str:
    return f"{interval['mean']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated configuration names")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--limit", type=int, help="use only the first N train and validation pairs (smoke run)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "cubeqa")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    names = args.only.split(",") if args.only else list(CONFIGS)
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; known: {list(CONFIGS)}")
    encoder = TeacherEncoder()
    train = load(ROOT / "data" / "squad_sent_train.jsonl", encoder, args.cache_dir, args.limit)
    val = load(ROOT / "data" / "squad_sent_val.jsonl", encoder, args.cache_dir, args.limit)
    print(f"train {len(train.pairs)} pairs, validation {len(val.pairs)} pairs; intervals: paired 95% bootstrap, {args.resamples} resamples")
    header = f"{'config':32} {'seed':>4} {'train s':>7} {'cube_cos':>8}  {'cos vs identity':26} {'cos vs mean shift':26} {'R@1 vs identity':26} {'MRR vs identity':26}"
    print(header)
    rows = []
    for name in names:
        for seed in (int(s) for s in args.seeds.split(",")):
            row = run(name, seed, train, val, args.resamples)
            rows.append(row)
            print(
                f"{name:32} {seed:>4} {row['train_seconds']:>7} {row['cube_cos']:>8.4f}  {cell(row['cos vs identity']):26} "
                f"{cell(row['cos vs mean shift']):26} {cell(row['R@1 vs identity']):26} {cell(row['MRR vs identity']):26}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
