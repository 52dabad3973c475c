"""The learning-to-rank reranker's cost curve: validation P@1 against CPU time per question for the depth k it
reranks (the fused top 10, 20, 50), each trained on the training split with the shipped fixed schedule.

Lists are built as `cubeqa train` builds them (bench/rerank_data.py). Time per question is the rerank stage's own
work on validation: features (tokenising the candidates included) plus the model's prediction, one thread,
median of `--repeats` passes over all 1,261 questions in batches of 64. The cross-encoder candidate's figures
come from bench/cross_encoder.py.

    .venv/bin/python bench/rerank.py --json docs/results/rerank-curve.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rerank_data import load_rerank_data  # noqa: E402

from cubeqa.provenance import run_record  # noqa: E402
from pipeline.encoder import TeacherEncoder  # noqa: E402
from pipeline.evaluation import paired_bootstrap  # noqa: E402
from pipeline.knowledge.fusion import Hits  # noqa: E402
from pipeline.knowledge.lexical import LexicalIndex  # noqa: E402
from pipeline.rerank.features import hit_features  # noqa: E402
from pipeline.rerank.ranker import RankerConfig, train_ranker  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--depths", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--one-job", type=int, default=200, help="validation questions answered one at a time in process, "
                   "with and without the rerank stage (0: skip)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    teacher = TeacherEncoder()
    rows = []
    for depth in args.depths:
        train, val = load_rerank_data(teacher, depth, k=depth)
        ranker = train_ranker(train.features, train.present, train.gold[:, :depth], RankerConfig(depth=depth))
        fused = val.gold[:, 0].astype(np.float64)
        picked = val.gold[np.arange(len(fused)), np.argmax(ranker.score(val.features), axis=1)].astype(np.float64)
        interval = paired_bootstrap(picked - fused, args.resamples)
        ms = rerank_ms(ranker, val, args.repeats)
        row = {"depth": depth, "trees": ranker.config.trees, "fused_p1": float(fused.mean()),
               "reranked_p1": float(picked.mean()), "minus_fused": interval.to_dict(),
               "recall_at_depth": float(val.gold[:, :depth].any(axis=1).mean()), "ms_per_question": ms,
               "train_seconds": ranker.record["training"]["seconds"]}
        rows.append(row)
        print(f"top {depth:>3}: P@1 {row['reranked_p1']:.4f} (fused {row['fused_p1']:.4f}; gold in the list "
              f"{row['recall_at_depth']:.4f}), − fused {interval.mean:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}], "
              f"{ms:.3f} ms a question, trained in {row['train_seconds']:.0f} s", flush=True)
    one_job = one_job_ms(val.questions[: args.one_job]) if args.one_job else {}
    for name, figures in one_job.items():
        print(f"one job in process, {name}: p50 {figures['p50']:.1f} ms, p95 {figures['p95']:.1f} ms")
    if args.json:
        record = {"run": run_record("bench/rerank.py", sys.argv[1:] if argv is None else argv), "rows": rows,
                  "one_job_in_process_ms": one_job}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


def one_job_ms(questions: list[str]) -> dict[str, dict[str, float]]:
    """p50 / p95 ms of ProductionPipeline answering one question at a time (shipped bundle, built-in bank), without
    and with the rerank stage, alternating question by question so both see the same machine."""
    from rerank_data import BUNDLE

    from pipeline import EncoderConfig, ProductionPipeline

    pipe = ProductionPipeline.from_bundle(BUNDLE, encoder_config=EncoderConfig(device="cpu"))
    times: dict[str, list[float]] = {"fused": [], "reranked": []}
    for question in questions[:5]:
        pipe.process_batch([question], rerank=True)
    for question in questions:
        for name, rerank in (("fused", False), ("reranked", True)):
            started = time.perf_counter()
            pipe.process_batch([question], rerank=rerank)
            times[name].append(1000 * (time.perf_counter() - started))
    return {name: {"p50": float(np.percentile(t, 50)), "p95": float(np.percentile(t, 95)), "n": len(t)}
            for name, t in times.items()}


def rerank_ms(ranker, val, repeats: int) -> float:
    """Median over `repeats` passes of the rerank stage's work per validation question (features + prediction)."""
    n = len(val.questions)
    lexical = LexicalIndex.build(val.texts)
    vectors = np.zeros((len(val.texts), 1), np.float32)  # identity features read teacher vectors: timed with zeros
    depth = ranker.depth
    missing = np.zeros((n, depth))
    hits = Hits(missing, val.rows[:, :depth], missing, missing, missing)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, n, 64):
            part = slice(start, start + 64)
            sub = Hits(hits.scores[part], hits.rows[part], hits.dense[part], hits.lexical[part], hits.overlap[part])
            features, _ = hit_features(sub, val.questions[part], np.zeros((len(sub.rows), 1), np.float32), val.texts,
                                       vectors, lexical, depth)
            ranker.score(features)
        times.append(1000 * (time.perf_counter() - started) / n)
    return float(np.median(times))


if __name__ == "__main__":
    raise SystemExit(main())
