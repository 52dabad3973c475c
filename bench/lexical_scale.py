"""The lexical (BM25) side of a bank at scale: build time, size, and query time of one question's BM25 over the bank
plus its top-100, the part of the fused search that grows with the bank (pipeline.knowledge.lexical).

Sentences are synthetic: lengths and words drawn from the shipped bank's sentences and word frequencies, so the
vocabulary (about 30,000 words) is smaller than that of a real corpus of this size and every posting list longer:
query times here are pessimistic. Questions are validation questions. Dense search and the fused recall against
exact fusion are not measured here (docs/bank-scale.md has the dense index's figures).

    .venv/bin/python bench/lexical_scale.py --sizes 100000 1000000 --json docs/results/lexical-scale.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from cubeqa.provenance import run_record
from pipeline.knowledge.lexical import LexicalIndex, tokenize

ROOT = Path(__file__).resolve().parents[1]


def synthetic(n: int, seed: int = 0) -> list[str]:
    """`n` sentences with the shipped bank's sentence lengths and word frequencies."""
    bank = [json.loads(line) for line in (ROOT / "cubeqa/bundles/default/bank.jsonl").read_text().splitlines()]
    words = [w for text in bank for w in text.split()]
    lengths = np.array([len(text.split()) for text in bank])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(words), int(lengths.mean() * n * 1.1))
    sizes = rng.choice(lengths, n)
    out, at = [], 0
    for size in sizes:
        out.append(" ".join(words[i] for i in picks[at : at + size]))
        at += size
    return out


def query_ms(index: LexicalIndex, questions: list[str], depth: int = 100) -> np.ndarray:
    """Milliseconds per question: tokenise, BM25 of every sentence, its max and top-`depth`."""
    times = []
    for question in questions:
        start = time.perf_counter()
        bm25, _ = index.scores_and_overlap(tokenize([question])[0])
        top = float(bm25.max())
        if top > 0:
            np.argpartition(-bm25, depth - 1)[:depth]
        times.append(1000 * (time.perf_counter() - start))
    return np.array(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--questions", type=int, default=300)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    val = [json.loads(line)["question"] for line in (ROOT / "data/squad_sent_val.jsonl").read_text().splitlines()]
    questions = val[: args.questions]
    rows = []
    for n in args.sizes:
        texts = synthetic(n)
        start = time.perf_counter()
        index = LexicalIndex.build(texts)
        build = time.perf_counter() - start
        del texts
        query_ms(index, questions[:20])  # warm-up
        times = query_ms(index, questions)
        row = {"sentences": n, "build_s": round(build, 1), "index_mb": round(index.nbytes / 2**20, 1),
               "vocab": len(index.vocab), "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               "p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2)}
        print(row, flush=True)
        rows.append(row)
    if args.json:
        record = {"run": run_record("bench/lexical_scale.py", sys.argv[1:] if argv is None else argv), "rows": rows}
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
