"""Question tower: R@1, MRR and mean cos of the tuned tower against identity (the frozen teacher)
on the validation split, per seed, with paired 95% bootstrap intervals; and encode throughput.

    .venv/bin/python bench/tower.py [--seeds 0,1,2] [--epochs 1] [--threads 2] [--layers 4]
        [--lora-rank R] [--out runs/tower] [--json PATH] [--skip-throughput] [--skip-train]
    .venv/bin/python bench/tower.py --merge A.json B.json --json docs/results/tower-seeds.json

Retrieval is over the open bank (unique answers of train + validation), as `cubeqa eval`
reports it. The lower-layer token states of the questions are computed once and shared by
every seed. Throughput: questions/s of `TeacherEncoder.encode` against the tower's one pass
(shared lower layers, then both the frozen and the tuned top) on the first --questions
training questions, per batch size and torch thread count, best of --runs: for jobs without a reference
(the tower's top alone) and with one (both tops, plus the teacher on the reference answers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.data import EmbeddedPairs, embed_cached, load_pairs, texts_hash  # noqa: E402
from pipeline.encoder import EncoderConfig, TeacherEncoder  # noqa: E402
from pipeline.evaluation import paired_bootstrap  # noqa: E402
from pipeline.tower import QuestionTower, TowerConfig  # noqa: E402
from pipeline.tower_io import save_tower  # noqa: E402
from pipeline.training.tower_trainer import (  # noqa: E402
    LowerStates,
    TowerTrainConfig,
    lower_states,
    tower_vectors,
    train_tower,
    validation_figures,
)

TRAIN = ROOT / "data" / "squad_sent_train.jsonl"
VAL = ROOT / "data" / "squad_sent_val.jsonl"


def embed_split(path: Path, tower: QuestionTower, cache_dir: Path | None) -> tuple[EmbeddedPairs, LowerStates]:
    """A split's pairs embedded as `load_embedded` embeds them, and its questions' lower states.

    The teacher's question vectors come from the cached lower states through the frozen top (the same
    vectors to ~1e-7), so the full teacher never runs on the questions.
    """
    pairs = load_pairs(path)
    states = lower_states(tower, [pair.question for pair in pairs], cache_dir=cache_dir)
    unique = sorted({pair.answer for pair in pairs})
    encoder = tower.encoder
    bank = embed_cached(unique, lambda texts: encoder.encode(texts).vectors, cache_dir, f"enc-{encoder.identity.weights_hash}")
    row = {text: i for i, text in enumerate(unique)}
    q = tower_vectors(tower, states, tuned=False)
    a = bank[[row[pair.answer] for pair in pairs]]
    return EmbeddedPairs(pairs, q, a, texts_hash([f"{p.question}\t{p.answer}" for p in pairs])), states


def per_sample(vectors: np.ndarray, train, split) -> dict[str, np.ndarray]:  # EmbeddedPairs
    """Per-question hit@1, reciprocal rank and cos against the open bank."""
    from pipeline.evaluation import Bank, retrieval_ranks

    bank = Bank.from_pairs(train, split)
    ranks = retrieval_ranks(vectors, bank.vectors, bank.rows_of(split.answer_ids))
    return {"R@1": (ranks == 1).astype(float), "MRR": 1.0 / ranks, "cos": (vectors * split.a).sum(-1)}


def throughput(
    encoder: TeacherEncoder, tower: QuestionTower, texts: list[str], refs: list[str], batch_sizes: list[int], threads: list[int], runs: int
) -> list[dict[str, object]]:
    """Questions/s (best of `runs`) of the encode stage's work, before (the teacher alone) and after (the tower):
    for jobs without a reference (the teacher's vector vs the tower's top alone) and with one (questions and
    references: the teacher on both vs both tops on the questions plus the teacher on the references)."""
    modes = {
        "teacher": lambda size: encoder.encode(texts),
        "tower": lambda size: tower.encode_both(texts, batch_size=size, teacher_rows=[False] * len(texts)),
        "teacher_refs": lambda size: (encoder.encode(texts), encoder.encode(refs)),
        "tower_refs": lambda size: (tower.encode_both(texts, batch_size=size), encoder.encode(refs)),
    }
    rows = []
    for count in threads:
        torch.set_num_threads(count)
        for size in batch_sizes:
            encoder.config = replace(encoder.config, batch_size=size)  # TeacherEncoder reads its batch size from its config at each call
            timings: dict[str, list[float]] = {name: [] for name in modes}
            for _ in range(runs):
                for name, run in modes.items():
                    started = time.perf_counter()
                    run(size)
                    timings[name].append(len(texts) / (time.perf_counter() - started))
            row: dict[str, object] = {"threads": count, "batch_size": size, "runs": timings}
            row |= {f"{name}_qps": max(values) for name, values in timings.items()}
            row["ratio_no_reference"] = row["tower_qps"] / row["teacher_qps"]
            row["ratio_with_reference"] = row["tower_refs_qps"] / row["teacher_refs_qps"]
            rows.append(row)
            print(throughput_line(row), flush=True)
    return rows


def throughput_line(row: dict[str, object]) -> str:
    return (
        f"threads {row['threads']} batch {row['batch_size']:>3}: no reference: teacher {row['teacher_qps']:6.1f} q/s, tower {row['tower_qps']:6.1f} q/s "
        f"(ratio {row['ratio_no_reference']:.3f}); with reference: teacher {row['teacher_refs_qps']:6.1f} q/s, tower {row['tower_refs_qps']:6.1f} q/s "
        f"(ratio {row['ratio_with_reference']:.3f})"
    )


def write(path: Path | None, figures: dict[str, object]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch threads for training and evaluation")
    p.add_argument("--layers", type=int, default=TowerConfig().layers, help="top layers tuned")
    p.add_argument("--lora-rank", type=int, default=None, help="LoRA rank (default: tune the layers fully)")
    p.add_argument("--train", type=Path, default=TRAIN)
    p.add_argument("--val", type=Path, default=VAL)
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "cubeqa", help="embedding and lower-state cache (the `cubeqa` cache layout)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "tower", help="each seed's tower goes to OUT/seed-<n>")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--questions", type=int, default=2000, help="questions timed for throughput")
    p.add_argument("--batch-sizes", default="16,64")
    p.add_argument("--throughput-threads", default="1,2")
    p.add_argument("--runs", type=int, default=2, help="timed runs per throughput cell (best is kept)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON", help="only merge the --json files of earlier runs (seeds run in separate processes) into --json, and --json with .txt")
    args = p.parse_args()
    if args.merge:
        merged = merge([json.loads(path.read_text(encoding="utf-8")) for path in args.merge])
        write(args.json, merged)
        text = "\n".join(["commands: " + "; ".join(merged["commands"]), table(merged)]) + "\n"
        if args.json is not None:
            args.json.with_suffix(".txt").write_text(text, encoding="utf-8")
        print(text, end="")
        return

    torch.set_num_threads(args.threads)
    encoder = TeacherEncoder(EncoderConfig(device="cpu"))
    tower_config = TowerConfig(layers=args.layers, lora_rank=args.lora_rank)
    figures: dict[str, object] = {"command": " ".join(["bench/tower.py", *sys.argv[1:]]), "tower_config": tower_config.to_dict(), "threads": args.threads, "seeds": []}

    if not args.skip_train:
        probe = QuestionTower(encoder, tower_config)
        started = time.perf_counter()
        train, states = embed_split(args.train, probe, args.cache_dir)
        val, val_states = embed_split(args.val, probe, args.cache_dir)
        figures["data_seconds"] = time.perf_counter() - started
        print(f"answers and lower states of {len(states)} train + {len(val_states)} validation questions: {figures['data_seconds']:.0f} s", flush=True)
        identity = per_sample(val.q, train, val)
        figures["identity"] = {name: float(values.mean()) for name, values in identity.items()}
        for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
            config = TowerTrainConfig(epochs=args.epochs, seed=seed, threads=args.threads)
            torch.manual_seed(seed)
            tower = QuestionTower(encoder, tower_config)
            started = time.perf_counter()
            epochs = train_tower(
                tower, train, states, config, val=val, val_states=val_states,
                on_step=lambda step, total, loss, seed=seed: print(f"  seed {seed} step {step} loss {loss:.4f}", flush=True) if step % 20 == 0 else None,
                on_epoch=lambda r, seed=seed: print(f"  seed {seed} epoch {r.epoch}: loss {r.train_loss:.4f}, {r.seconds:.0f} s, validation {r.validation}", flush=True),
            )
            seconds = time.perf_counter() - started
            vectors = tower_vectors(tower, val_states)
            tuned = per_sample(vectors, train, val)
            row: dict[str, object] = {"seed": seed, "train_seconds": seconds, "train_config": config.to_dict(), **validation_figures(vectors, train, val)}
            row["curve"] = [{"epoch": e.epoch, "train_loss": e.train_loss, "seconds": e.seconds, "validation": e.validation} for e in epochs]
            row["differences"] = {
                f"tower − identity: {name}": paired_bootstrap(tuned[name] - identity[name], args.resamples, 0).to_dict() for name in ("R@1", "MRR", "cos")
            }
            row["saved"] = str(args.out / f"seed-{seed}")
            save_tower(args.out / f"seed-{seed}", tower, {"train_config": config.to_dict(), "validation": validation_figures(vectors, train, val)})
            figures["seeds"].append(row)
            write(args.json, figures)

    if not args.skip_throughput:
        pairs = load_pairs(args.train)[: args.questions]
        figures["throughput"] = throughput(
            encoder, QuestionTower(encoder, tower_config), [pair.question for pair in pairs], [pair.answer for pair in pairs],
            [int(s) for s in args.batch_sizes.split(",")], [int(s) for s in args.throughput_threads.split(",")], args.runs,
        )
        write(args.json, figures)
    print(table(figures))


def merge(parts: list[dict[str, object]]) -> dict[str, object]:
    """One figures dict from several runs: every seed row, every command, the first of each other field."""
    merged: dict[str, object] = {"commands": [part["command"] for part in parts], "seeds": []}
    for part in parts:
        for key, value in part.items():
            if key == "seeds":
                merged["seeds"].extend(value)
            elif key != "command":
                merged.setdefault(key, value)
    merged["seeds"].sort(key=lambda row: row["seed"])
    return merged


def table(figures: dict[str, object]) -> str:
    """The per-seed figures and throughput as plain-text tables."""
    lines = []
    ident = figures.get("identity")
    if ident:
        lines.append(f"identity (frozen teacher): R@1 {ident['R@1']:.4f}  MRR {ident['MRR']:.4f}  cos {ident['cos']:.4f}")
        lines.append(f"{'seed':>4} {'R@1':>7} {'ΔR@1 [95%]':>26} {'MRR':>7} {'ΔMRR [95%]':>26} {'cos':>7} {'Δcos [95%]':>26} {'train s':>8}")
        for row in figures["seeds"]:
            cells = [f"{row['seed']:>4}"]
            for name in ("R@1", "MRR", "cos"):
                d = row["differences"][f"tower − identity: {name}"]
                cells.append(f"{row[name]:7.4f} {d['mean']:+8.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")
            cells.append(f"{row['train_seconds']:8.0f}")
            lines.append(" ".join(cells))
    for row in figures.get("throughput", []):
        lines.append(throughput_line(row))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
