"""Chooses the fusion weight `a` of score = cosine + a · BM25 / (the question's max BM25) on validation.

The open bank is the unique answer sentences of train + validation (12,725; exact flat search; BM25 by
pipeline.knowledge.lexical), the questions the validation split, the answer vectors the shipped bundle's
tower → cube. For each `a` on a grid over [0, 1] it prints P@1, MRR@10 and R@20 of the fused ranking, beside
BM25 alone, and the paired 95% interval of the best `a` against dense (a = 0). `a` is chosen on this split,
so its own figure is optimistic by the choice; the choice is a flat optimum (see the table), not a spike.

    .venv/bin/python bench/fusion.py --json docs/results/fusion.json --save

--save records the chosen fusion in the bundle's manifest.json (`retrieval.fusion`), which every decode stage reads:
the bundle's calibrator is fit on scores of this fusion, so the two travel together.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from cubeqa.provenance import run_record
from cubeqa.settings import default_cache_dir
from pipeline.bank_eval import MapResult, flat_bank, gold_answers, search_map, unique_bank
from pipeline.checkpoint import load_bundle
from pipeline.encoder import TeacherEncoder
from pipeline.evaluation import paired_bootstrap
from pipeline.knowledge.fusion import Fusion
from pipeline.stages import answer_vectors
from pipeline.workflows import load_embedded

ROOT = Path(__file__).resolve().parents[1]


def figures(result: MapResult) -> dict[str, float]:
    return {
        "P@1": float(result.hit.mean()),
        "MRR@10": float(result.reciprocal.mean()),
        "R@20": float(result.recall20.mean()),
    }


def save_fusion(bundle_dir: Path, fusion: Fusion, chosen: dict[str, float], bank_size: int, questions: int) -> None:
    """Writes `retrieval.fusion` (and what it was chosen on) into the bundle's manifest.json."""
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["retrieval"] = {
        "fusion": fusion.to_dict(),
        "chosen_by": "bench/fusion.py: best validation P@1 over the weight grid",
        "validation": {"questions": questions, "bank_size": bank_size, **chosen},
    }
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote retrieval.fusion to {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--bundle", type=Path, default=ROOT / "cubeqa" / "bundles" / "default")
    p.add_argument("--val", type=Path, default=ROOT / "data" / "squad_sent_val.jsonl")
    p.add_argument("--grid", type=float, nargs="+", default=[round(0.1 * i, 1) for i in range(11)])
    p.add_argument(
        "--depth", type=int, default=Fusion().depth, help="candidates from each of the dense and lexical lists"
    )
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--save", action="store_true", help="record the chosen fusion in the bundle's manifest.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    encoder = TeacherEncoder()
    bundle = load_bundle(args.bundle, encoder.identity)
    val = load_embedded(args.val, encoder, default_cache_dir())
    questions = [pair.question for pair in val.pairs]
    outputs = answer_vectors(bundle, encoder, questions, val.q)
    texts, vectors = unique_bank(
        list(bundle.bank_texts) + [pq.answer for pq in val.pairs], np.concatenate([bundle.bank_vectors, val.a])
    )
    bank = flat_bank(texts, vectors)
    golds = gold_answers(args.val)
    print(f"open bank: {len(texts)} unique answer sentences, {len(questions)} validation questions, depth {args.depth}")

    def run(weight: float, ranking: str = "fused") -> MapResult:
        return search_map(
            bank, outputs, golds, None, texts=questions, fusion=Fusion(weight, args.depth), ranking=ranking
        )  # type: ignore[arg-type]

    lexical = run(0.0, "lexical")
    sweep = {a: run(a) for a in args.grid}
    print(f"{'ranking':<14} {'P@1':>7} {'MRR@10':>7} {'R@20':>7}")
    print(f"{'BM25 alone':<14} " + " ".join(f"{v:7.4f}" for v in figures(lexical).values()))
    for a, result in sweep.items():
        print(f"{f'a = {a:g}':<14} " + " ".join(f"{v:7.4f}" for v in figures(result).values()))
    dense = sweep.get(0.0) or run(0.0)
    best = max(sweep, key=lambda a: (figures(sweep[a])["P@1"], figures(sweep[a])["MRR@10"]))
    intervals = {
        f"fused (a = {best:g}) − dense: P@1": paired_bootstrap(sweep[best].hit - dense.hit, args.resamples),
        f"fused (a = {best:g}) − dense: MRR@10": paired_bootstrap(
            sweep[best].reciprocal - dense.reciprocal, args.resamples
        ),
        "BM25 − dense: P@1": paired_bootstrap(lexical.hit - dense.hit, args.resamples),
    }
    print(f"best a on validation: {best:g}")
    for name, interval in intervals.items():
        print(f"  {name}: {interval.mean:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]")
    if args.save:
        save_fusion(args.bundle, Fusion(best, args.depth), figures(sweep[best]), len(texts), len(questions))
    if args.json:
        record = {
            "run": run_record("bench/fusion.py", sys.argv[1:] if argv is None else argv),
            "bank_size": len(texts),
            "questions": len(questions),
            "depth": args.depth,
            "form": Fusion().to_dict()["form"],
            "best_weight": best,
            "bm25": figures(lexical),
            "sweep": [{"weight": a, **figures(r)} for a, r in sweep.items()],
            "differences": {k: v.to_dict() for k, v in intervals.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
