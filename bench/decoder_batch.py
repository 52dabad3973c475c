"""Generative decoding time per sentence by batch size, in int8 and fp32, in one decoding mode.

    .venv/bin/python bench/decoder_batch.py [--sentences 256] [--batch-sizes 1,8,64] [--runs 3]
        [--mode "beam=3,rerank=true,min_length=0.9"] [--json PATH]

A request decodes one vector (batch 1); the decode stage decodes a micro-batch (64 by default) in one
batched pass (greedy and beam search alike; reranking embeds the batch's candidates in one call).
The mode is the bundle's default unless `--mode` names options. Each run decodes the same
`--sentences` validation vectors (past the eval's round-trip sample) in batches of each size, once
with int8 projections and once in fp32, alternating, and reports mean milliseconds per sentence
(median and range over runs) and the int8/fp32 ratio per run; then, per precision, whether batching
changes the output: the round-trip fidelity of the last run's texts, its paired difference from the
first batch size with a 95% bootstrap interval, and the share of texts that are the same.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common
import numpy as np


def decode_all(decoder, vectors: np.ndarray, batch: int) -> tuple[float, list[str]]:  # GenerativeDecoder
    """Wall milliseconds per vector to decode all of them in batches of `batch`, and the texts."""
    texts: list[str] = []
    started = time.perf_counter()
    for start in range(0, len(vectors), batch):
        texts += [g.text for g in decoder.decode(vectors[start : start + batch])]
    return 1000 * (time.perf_counter() - started) / len(vectors), texts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sentences", type=int, default=256, help="validation vectors decoded per run")
    p.add_argument("--batch-sizes", type=common.sizes, default=[1, 8, 64])
    p.add_argument("--runs", type=int, default=3, help="timed runs; figures are their median, min and max")
    p.add_argument("--mode", default="", help='decoding options over the default, e.g. "beam=3,rerank=true"')
    p.add_argument("--bundle", type=Path, default=common.ROOT / "cubeqa" / "bundles" / "default")
    p.add_argument("--data", type=Path, default=common.VAL, help="the split whose vectors are decoded")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON to this path")
    args = p.parse_args()
    from pipeline import TeacherEncoder, load_embedded, load_generative, paired_bootstrap
    from pipeline.decoder_workflows import ROUND_TRIP_SENTENCES, round_trip_sample
    from pipeline.decoders.generative import int8_available

    if not int8_available():
        raise SystemExit("this torch build has no int8 CPU engine: there is nothing to compare")
    encoder = TeacherEncoder()
    _, vectors = round_trip_sample(load_embedded(args.data, encoder, common.settings().cache_dir), args.sentences, skip=ROUND_TRIP_SENTENCES)
    base, _ = load_generative(args.bundle, encoder)
    options = common.decoding_options(args.mode)
    if "int8" in options:
        raise SystemExit("--mode must not set int8: this script times both precisions")
    decoders = {"int8": base.with_options(**options, int8=True), "fp32": base.with_options(**options, int8=False)}
    for decoder in decoders.values():
        decoder.decode(vectors[: max(args.batch_sizes)])  # warm-up: first calls allocate and pack the int8 weights
    rows, quality_rows, figures = [], [], {}
    first: dict[str, tuple[list[str], np.ndarray]] = {}  # per precision, the smallest batch's texts and fidelities
    for batch in args.batch_sizes:
        runs: dict[str, list[float]] = {name: [] for name in decoders}
        texts: dict[str, list[str]] = {}
        for _ in range(args.runs):
            for name, decoder in decoders.items():
                ms, texts[name] = decode_all(decoder, vectors, batch)
                runs[name].append(ms)
        ratios = [a / b for a, b in zip(runs["int8"], runs["fp32"])]
        figures[str(batch)] = {"int8_ms": common.spread(runs["int8"]), "fp32_ms": common.spread(runs["fp32"]), "int8_over_fp32": common.spread(ratios)}
        rows.append([batch, common.band(figures[str(batch)]["int8_ms"]), common.band(figures[str(batch)]["fp32_ms"]), common.band(figures[str(batch)]["int8_over_fp32"], 2)])
        cells: list[object] = [batch]
        for name, outputs in texts.items():  # does batching change what comes out? (int8 shares activation scales across rows)
            fidelity = np.sum(encoder.encode_generated(outputs) * vectors, axis=1)
            base_texts, base_fidelity = first.setdefault(name, (outputs, fidelity))
            change = paired_bootstrap(fidelity - base_fidelity).to_dict()
            same = common.same_share(outputs, base_texts)
            figures[str(batch)][f"{name}_quality"] = {"fidelity": float(fidelity.mean()), "fidelity_vs_first_batch": change, "same_text_as_first_batch": same}
            cells.append(f"{fidelity.mean():.4f}, {change['mean']:+.4f} [{change['low']:+.4f}, {change['high']:+.4f}], same {same:.2f}")
        quality_rows.append(cells)
    mode = args.mode or "default (greedy)"
    common.table(f"ms per sentence, {len(vectors)} validation vectors, {mode}, median [min-max] of {args.runs} runs",
                 ["batch", "int8", "fp32", "int8 / fp32"], rows)
    common.table(f"round-trip fidelity; its paired difference from batch {args.batch_sizes[0]} (95% interval); share of the same texts",
                 ["batch", "int8", "fp32"], quality_rows)
    common.write_json(args.json, {"sentences": len(vectors), "runs": args.runs, "mode": mode, "batch_sizes": figures})


if __name__ == "__main__":
    main()
