"""Generative decoding modes compared on validation sentences the eval does not report, to choose the default.

    .venv/bin/python bench/decoder_modes.py [--sentences 300] [--bundle cubeqa/bundles/default]
        [--mode "beam=1" --mode "beam=3,rerank=true,min_length=0.9" ...] [--json PATH]

`cubeqa eval` reports the round trip on the first 500 of one seeded order of the validation split's
unique questions and answers; this script takes the next `--sentences` of that order, so choosing a
mode here does not select on the reported sample. Each mode decodes every sentence alone (batch 1)
and prints fidelity, BLEU, length ratio, real words and ms median / p90, then each mode's paired
difference from the first mode with a 95% bootstrap interval (fidelity per sentence, BLEU over
resampled corpora) and the share of sentences it decodes to the same text.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common
import numpy as np

from pipeline.decoder_workflows import ROUND_TRIP_SENTENCES


def bleu_interval(hyps_a: list[str], hyps_b: list[str], refs: list[str], resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Corpus BLEU of b minus a, and its paired percentile 95% interval over resampled sentences."""
    from sacrebleu.metrics import BLEU

    metric = BLEU()
    stats_a = np.array(metric._extract_corpus_statistics(hyps_a, [refs]), dtype=np.float64)  # per-sentence n-gram counts
    stats_b = np.array(metric._extract_corpus_statistics(hyps_b, [refs]), dtype=np.float64)
    score = lambda stats: metric._compute_score_from_stats(list(stats.sum(0))).score  # noqa: E731
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        pick = rng.integers(0, len(refs), len(refs))
        diffs.append(score(stats_b[pick]) - score(stats_a[pick]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"mean": score(stats_b) - score(stats_a), "low": float(low), "high": float(high)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=300, help="validation sentences past the first --skip")
    p.add_argument("--skip", type=int, default=ROUND_TRIP_SENTENCES, help="sentences of the seeded order to pass over (at least the eval's --sentences)")
    p.add_argument("--bundle", type=Path, default=common.ROOT / "cubeqa" / "bundles" / "default")
    p.add_argument("--data", type=Path, default=common.VAL)
    p.add_argument("--mode", action="append", default=[], help='decoding options, e.g. "beam=3,rerank=true" (repeatable; the first is the baseline)')
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    from pipeline import TeacherEncoder, load_embedded, load_generative, paired_bootstrap
    from pipeline.decoder_workflows import normalise, round_trip, round_trip_sample

    modes = args.mode or ["beam=1", "beam=3,rerank=true,min_length=0.9"]
    encoder = TeacherEncoder()
    split = load_embedded(args.data, encoder, common.settings().cache_dir)
    texts, vectors = round_trip_sample(split, args.sentences, skip=args.skip)
    decoder, _ = load_generative(args.bundle, encoder)
    decoder.decode(vectors[:2])  # warm-up: first calls allocate
    trips = [round_trip(decoder.with_options(**common.decoding_options(mode)), encoder, texts, vectors, mode) for mode in modes]
    refs = [normalise(t, decoder) for t in texts]
    rows = []
    for trip in trips:
        row = {k: v for k, v in trip.to_dict().items() if k != "examples"}
        if trip is not trips[0]:
            row["fidelity_vs_first"] = paired_bootstrap(np.array(trip.cosines) - np.array(trips[0].cosines)).to_dict()
            row["bleu_vs_first"] = bleu_interval(trips[0].outputs, trip.outputs, refs)
            row["same_text_as_first"] = common.same_share(trip.outputs, trips[0].outputs)
        rows.append(row)
    common.table(
        f"{len(texts)} validation sentences past the first {args.skip} (the eval reports the first {ROUND_TRIP_SENTENCES} by default); bundle {args.bundle}",
        ["mode", "fidelity", "BLEU", "len", "real", "ms med", "ms p90"],
        [[t.mode, f"{t.fidelity:.4f}", f"{t.bleu:.2f}", f"{t.length_ratio:.3f}", f"{t.real_words:.4f}", f"{t.ms_median:.1f}", f"{t.ms_p90:.1f}"] for t in trips],
    )
    interval = lambda f, digits: f"{f['mean']:+.{digits}f} [{f['low']:+.{digits}f}, {f['high']:+.{digits}f}]"  # noqa: E731
    common.table(
        f"paired differences from {modes[0]}, 95% bootstrap intervals",
        ["mode", "fidelity", "BLEU", "same text"],
        [[row["mode"], interval(row["fidelity_vs_first"], 4), interval(row["bleu_vs_first"], 2), f"{row['same_text_as_first']:.3f}"] for row in rows[1:]],
    )
    common.write_json(args.json, {"sentences": len(texts), "skip": args.skip, "bundle": str(args.bundle), "modes": rows})


if __name__ == "__main__":
    main()
