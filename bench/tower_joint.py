"""Joint training of the question tower and the cube, against the staged training `cubeqa train` does:
validation R@1, MRR and mean cos of tower → cube against identity, with paired 95% bootstrap intervals.

    .venv/bin/python bench/tower_joint.py [--epochs 2] [--seed 0] [--threads 2] [--json PATH]

Joint: one optimiser over the tower's layers (lr 5e-5) and the cube (lr 1e-4), each batch of 128
training questions going through both, loss = the tower's loss on its vector (whole-bank InfoNCE,
τ 0.05, + 0.25·(1 − cos)) + the cube's loss on its output (1 − cos + 0.3·|residual|² + 0.25·whole-bank
InfoNCE), 10% linear warm-up then linear decay over --epochs. The shapes, seeds and losses are the
shipped ones (pipeline/config.py), so the staged row is the shipped bundle's own figures
(its manifest), read beside the joint run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.config import CubeConfig, TowerConfig, TowerTrainConfig, TrainConfig  # noqa: E402
from pipeline.cube import Cube, apply_map  # noqa: E402
from pipeline.encoder import EncoderConfig, TeacherEncoder  # noqa: E402
from pipeline.evaluation import evaluate  # noqa: E402
from pipeline.tower import QuestionTower  # noqa: E402
from pipeline.training.cube_trainer import answer_labels, cube_loss  # noqa: E402
from pipeline.training.tower_trainer import lower_states, lr_factor, tower_loss, tower_vectors  # noqa: E402
from pipeline.workflows import load_embedded  # noqa: E402

SHIPPED = ROOT / "cubeqa" / "bundles" / "default" / "manifest.json"
KEYS = ("cube − identity: R@1", "cube − identity: MRR", "cube − identity: cos", "tower − identity: R@1", "tower − identity: cos")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "cubeqa")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tower_cfg, tower_train, cube_train = TowerConfig(), TowerTrainConfig(seed=args.seed), TrainConfig(seed=args.seed)
    encoder = TeacherEncoder(EncoderConfig(device="cpu"))
    train = load_embedded(ROOT / "data" / "squad_sent_train.jsonl", encoder, args.cache_dir)
    val = load_embedded(ROOT / "data" / "squad_sent_val.jsonl", encoder, args.cache_dir)
    torch.manual_seed(args.seed)
    tower = QuestionTower(encoder, tower_cfg)
    states = lower_states(tower, [pair.question for pair in train.pairs], cache_dir=args.cache_dir)
    val_states = lower_states(tower, [pair.question for pair in val.pairs], cache_dir=args.cache_dir)
    torch.manual_seed(args.seed)
    cube = Cube(CubeConfig(dim=encoder.dim))

    a = torch.from_numpy(train.a)
    labels_np, first_rows = answer_labels(train.answer_ids)
    labels = torch.from_numpy(labels_np)
    bank = a[torch.from_numpy(first_rows)]
    bank_ids = torch.arange(len(bank))
    optimizer = torch.optim.AdamW(
        [{"params": [q for q in tower.parameters() if q.requires_grad], "lr": tower_train.lr}, {"params": cube.parameters(), "lr": cube_train.lr}],
        weight_decay=tower_train.weight_decay,
    )
    batch = tower_train.batch_size
    total = math.ceil(len(states) / batch) * args.epochs
    warmup = max(1, int(tower_train.warmup_fraction * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
    generator = np.random.default_rng(args.seed)
    started = time.perf_counter()
    step = 0
    for epoch in range(1, args.epochs + 1):
        tower.train()
        cube.train()
        order = generator.permutation(len(states))
        losses = []
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            rows = torch.from_numpy(idx)
            hidden, mask = states.batch(idx)
            t = tower(hidden, mask)
            out, delta = cube.forward_parts(t)
            loss = tower_loss(t, a[rows], labels[rows], bank, bank_ids, tower_train)
            loss = loss + cube_loss(out, delta, a[rows], labels[rows], bank, bank_ids, cube_train)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
            if step % 20 == 0:
                print(f"  epoch {epoch} step {step}/{total} loss {np.mean(losses[-20:]):.4f}", flush=True)
    seconds = time.perf_counter() - started
    tower.eval()
    cube.eval()
    tower_val = tower_vectors(tower, val_states)
    report = evaluate(lambda q: apply_map(cube, q), train, val, inputs=tower_val, rows={"tower": tower_val}).to_dict()
    staged = json.loads(SHIPPED.read_text(encoding="utf-8"))["metrics"]
    figures = {
        "command": " ".join(["bench/tower_joint.py", *sys.argv[1:]]),
        "joint": {"epochs": args.epochs, "seconds": seconds, "differences": {k: report["differences"][k] for k in KEYS}},
        "staged (shipped bundle)": {"differences": {k: staged["differences"][k] for k in KEYS}},
    }
    for name in ("joint", "staged (shipped bundle)"):
        print(name)
        for key, d in figures[name]["differences"].items():
            print(f"  {key}: {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")
    print(f"joint training: {seconds:.0f} s for {args.epochs} epochs")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
