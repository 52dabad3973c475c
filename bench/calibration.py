"""Fits the confidence calibrator of the shipped bundle on validation and reports how well it is calibrated.

The open bank (unique answer sentences of train + validation, exact flat search fused with BM25 as
the bundle records: pipeline.knowledge.fusion) holds every validation answer, so "the returned
sentence is a gold one" is defined for each question. The calibrator (isotonic or logistic, features
from the top fused scores and the lexical side of the top sentences) is chosen by
cross-validation with whole Wikipedia articles held out, then fit on all of validation and written
to the bundle's calibration.json with the default min_confidence. Prints P@1 / MRR@10 / R@20 of the model
ranked dense, lexical and fused, and identity, CV ECE per kind, the precision–coverage table; optionally routes the
hybrid decoder by
confidence (--hybrid, runs the generative decoder on every validation question).

    .venv/bin/python bench/calibration.py --json docs/results/calibration.json \
        --txt docs/results/calibration.txt --plot docs/results/precision-coverage.png --hybrid
    .venv/bin/python bench/calibration.py --rerank --json docs/results/calibration-rerank.json \
        --txt docs/results/calibration-rerank.txt
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
from pipeline.bank_eval import (
    Rerank,
    bank_evaluation,
    calibration_report,
    flat_bank,
    gold_answers,
    search_map,
    unique_bank,
)
from pipeline.calibration import (
    CALIBRATION_FILE,
    KINDS,
    RERANK_CALIBRATION,
    cross_validate,
    default_min_confidence,
    fit,
    load_calibration,
    log_loss,
    save_calibration,
)
from pipeline.checkpoint import load_bundle
from pipeline.data import file_hash
from pipeline.encoder import TeacherEncoder
from pipeline.knowledge.fusion import Fusion
from pipeline.rerank.ranker import load_reranker
from pipeline.stages import answer_vectors, bundle_fusion
from pipeline.workflows import load_embedded

ROOT = Path(__file__).resolve().parents[1]
# First row of each validation article (Kenya, IPCC, Chloroplast, Prime number, Rhine, Scottish
# Parliament; data/README.md). The file has no article field; its rows are in article order, and
# these are the first questions naming each article's subject after the previous article's last.
ARTICLE_STARTS = (0, 231, 335, 630, 783, 1072)
VAL_SHA = "bf95eff77c04784a"  # the file ARTICLE_STARTS was read from
PRECISION_TARGET = 0.80  # the default min_confidence is at least the lowest threshold whose answered validation questions are this precise
MORE_FEATURES_GAIN = 0.005  # CV log-loss a feature set must gain over (top, margin) to be shipped
FEATURE_SETS = (
    ("top",), ("top", "margin"), ("top", "margin", "gap10"), ("top", "margin", "lex_top"),
    ("top", "margin", "overlap_top"),
    ("top", "margin", "gap10", "overlap_top"), ("top", "margin", "gap10", "dense_top", "overlap_top"),
    ("dense_top", "lex_top", "margin"), ("dense_top", "lex_top", "margin", "gap10"),
    ("dense_top", "lex_top", "margin", "overlap_top"),
    ("dense_top", "lex_top", "margin", "gap10", "overlap_top"), ("dense_top", "margin", "gap10", "overlap_top"),
)
RERANK_FEATURE_SETS = (  # --rerank: the calibrator reads what the rerank stage shows
    ("rerank_top",), ("rerank_top", "rerank_margin"), ("rerank_top", "rerank_margin", "top"),
    ("rerank_top", "rerank_margin", "overlap_top"), ("rerank_top", "rerank_margin", "top", "overlap_top"),
    ("rerank_top", "rerank_margin", "dense_top", "lex_top"), ("rerank_top", "rerank_margin", "dense_top", "overlap_top"),
)


def article_groups(val_path: Path, count: int) -> tuple[np.ndarray, str]:
    """Article number of each validation row, and how it was found."""
    if file_hash(val_path) == VAL_SHA and count > ARTICLE_STARTS[-1]:
        return np.searchsorted(np.array(ARTICLE_STARTS), np.arange(count), side="right") - 1, "article (row ranges)"
    return np.arange(count) * 6 // count, "six contiguous row blocks (unknown file: articles not located)"



def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest threshold on a 0.01 grid at which the answered questions reach `target` precision."""
    for t in np.round(np.arange(0.0, 1.0, 0.01), 2):
        answered = confidence >= t
        if answered.any() and correct[answered].mean() >= target:
            return float(t)
    return 1.0


def plot(path: Path, curves: dict[str, dict[str, object]], reliability: list[dict[str, float]], ece: float, threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, report in curves.items():
        rows = report["precision_coverage"]
        left.plot([100 * r["coverage"] for r in rows], [100 * r["precision"] for r in rows], marker="o", label=name)
    left.set_xlabel("coverage (% of validation questions answered)")
    left.set_ylabel("precision of the answered (% whose sentence is gold)")
    left.set_title("precision–coverage, open bank")
    left.grid(alpha=0.3)
    left.legend()
    centres = [r["confidence"] for r in reliability]
    right.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    right.scatter(centres, [r["accuracy"] for r in reliability], s=[max(8, r["count"] / 3) for r in reliability], label="bins (area ∝ questions)")
    right.axvline(threshold, color="red", linestyle=":", label=f"default min_confidence {threshold:.2f}")
    right.set_xlabel("confidence (predicted probability, cross-validated)")
    right.set_ylabel("accuracy (share of gold answers)")
    right.set_title(f"reliability, 15 equal-width bins, ECE {ece:.3f}")
    right.set_xlim(0, 1)
    right.set_ylim(0, 1)
    right.grid(alpha=0.3)
    right.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def confidence_on(calibrator, bank, outputs: np.ndarray, questions: list[str], fusion: Fusion, rerank: Rerank | None = None
                  ) -> np.ndarray:
    """The calibrated confidence of the fused (with `rerank`: reranked) top of `bank` for these answer vectors and
    questions."""
    return search_map(bank, outputs, [[] for _ in questions], calibrator, texts=questions, fusion=fusion,
                      rerank=rerank).confidence


def hybrid_figures(bundle, encoder, val, outputs, calibrator, printer, questions, fusion) -> dict[str, object]:
    """Bank-only vs routing by top score vs routing by confidence, on the shipped (closed) bank."""
    from pipeline.decoders.generative import load_generative
    from pipeline.decoders.hybrid import choose_threshold as hybrid_threshold

    bank = flat_bank(bundle.bank_texts, bundle.bank_vectors)
    hits = bank.hybrid(outputs, questions, 10, fusion)
    scores, rows = hits.dense, hits.rows
    confidence = calibrator.predict(hits.scores, hits.parts())
    bank_vecs = bank.vectors[rows[:, 0]]
    generative, _ = load_generative(bundle.path, encoder)
    generated = []
    for start in range(0, len(outputs), 64):
        generated += [g.text for g in generative.decode(outputs[start : start + 64])]
    gen_vecs = encoder.encode_generated(generated)
    bank_e2e, gen_e2e = np.sum(bank_vecs * val.a, 1), np.sum(gen_vecs * val.a, 1)
    bank_echo, gen_echo = np.sum(bank_vecs * val.q, 1) > bank_e2e, np.sum(gen_vecs * val.q, 1) > gen_e2e
    result: dict[str, object] = {
        "bank_only": {"e2e_cos": float(bank_e2e.mean()), "echo_rate": float(bank_echo.mean())},
        "generative_only": {"e2e_cos": float(gen_e2e.mean()), "echo_rate": float(gen_echo.mean())},
    }
    for name, key in (("by_top_score", scores[:, 0]), ("by_confidence", confidence)):
        choice = hybrid_threshold(key, bank_e2e, bank_echo, gen_e2e, gen_echo, np.quantile(key, np.linspace(0.05, 0.95, 19)))
        result[name] = {"threshold": choice.threshold, "e2e_cos": choice.e2e_cos, "echo_rate": choice.echo_rate,
                        "generative_share": choice.generative_share, "table": choice.table}
    printer("\nhybrid on validation, shipped bank (train answers only): mean e2e_cos / echo rate / share generative")
    printer(f"  bank only          {result['bank_only']['e2e_cos']:.4f} / {result['bank_only']['echo_rate']:.4f} / 0.00")
    printer(f"  generative only    {result['generative_only']['e2e_cos']:.4f} / {result['generative_only']['echo_rate']:.4f} / 1.00")
    for name in ("by_top_score", "by_confidence"):
        r = result[name]
        printer(f"  routed {name:<13} t={r['threshold']:+.4f}: {r['e2e_cos']:.4f} / {r['echo_rate']:.4f} / {r['generative_share']:.2f}")
        for row in r["table"]:
            printer(f"      t={row['threshold']:+.4f} e2e {row['e2e_cos']:.4f} echo {row['echo_rate']:.4f} generative {row['generative_share']:.2f}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bundle", type=Path, default=ROOT / "cubeqa" / "bundles" / "default")
    p.add_argument("--train", type=Path, default=ROOT / "data" / "squad_sent_train.jsonl")
    p.add_argument("--val", type=Path, default=ROOT / "data" / "squad_sent_val.jsonl")
    p.add_argument("--dev-list", type=Path, default=ROOT / "tests" / "data" / "offtopic_dev.txt", help="off-topic questions the threshold is checked on")
    p.add_argument("--test-list", type=Path, default=ROOT / "tests" / "data" / "offtopic_questions.txt", help="off-topic questions reported, never tuned on")
    p.add_argument("--folds", type=int, default=6)
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-save", action="store_true", help="do not write calibration.json into the bundle")
    p.add_argument("--rerank", action="store_true",
                   help="fit the confidence of reranked answers (the bundle's reranker) into rerank-calibration.json")
    p.add_argument("--hybrid", action="store_true", help="also evaluate routing the hybrid decoder by confidence (slow)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--txt", type=Path, default=None, help="also write the printed figures here")
    p.add_argument("--plot", type=Path, default=None, help="precision–coverage and reliability plot (PNG)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    encoder = TeacherEncoder()
    bundle = load_bundle(args.bundle, encoder.identity)
    if bundle.bank_vectors is None:
        raise SystemExit(f"{args.bundle} ships no bank vectors")
    trained = bundle.manifest.extra.get("data", {}).get("train", {})
    if trained.get("sha256_16") != file_hash(args.train):
        raise SystemExit(f"the bundle's bank is not the answers of {args.train}: the open bank would be wrong")
    val = load_embedded(args.val, encoder, default_cache_dir())
    questions = [pair.question for pair in val.pairs]
    outputs = answer_vectors(bundle, encoder, questions, val.q)
    fusion = bundle_fusion(bundle.manifest)
    # The bundle's bank is the training answers embedded by this encoder (train_bank in workflows.py),
    # the same vectors `cubeqa eval` embeds for them, so the training split is not re-embedded here.
    texts, vectors = unique_bank(list(bundle.bank_texts) + [pq.answer for pq in val.pairs], np.concatenate([bundle.bank_vectors, val.a]))
    bank = flat_bank(texts, vectors)
    golds = gold_answers(args.val)
    if len(golds) != len(val.pairs):
        raise SystemExit(f"{args.val}: {len(golds)} records but {len(val.pairs)} pairs")
    say(f"open bank: {len(texts)} unique answer sentences (train {len(bundle.bank_texts)} + validation), {len(val.pairs)} validation questions")

    say(f"fusion: {fusion.to_dict()}")
    rerank = Rerank(load_reranker(args.bundle), val.q) if args.rerank else None
    feature_sets = RERANK_FEATURE_SETS if args.rerank else FEATURE_SETS
    base_set = ("rerank_top", "rerank_margin") if args.rerank else ("top", "margin")
    if rerank is not None:
        say(f"reranked: the fused top {rerank.reranker.depth} reordered by the bundle's reranker")
    cube = search_map(bank, outputs, golds, None, texts=questions, fusion=fusion, rerank=rerank)
    correct = cube.hit
    groups, grouping = article_groups(args.val, len(val.pairs))
    say(f"folds: {args.folds}, grouped by {grouping}; sizes {np.bincount(groups).tolist()}")

    candidates = {}
    for names in feature_sets:
        for kind in KINDS:
            result = cross_validate(cube.scores, correct, groups, kind, names, args.folds, cube.parts)
            candidates[(names, kind)] = result
    say("\ncross-validated (article held out): features, kind -> ECE (15 equal-width bins) / ECE (equal-mass) / log-loss")
    for (names, kind), r in candidates.items():
        say(f"  {'+'.join(names):<36} {kind:<9} {r.ece:.4f} / {r.ece_equal_mass:.4f} / {r.log_loss:.4f}")
    base = min((candidates[(base_set, k)] for k in KINDS), key=lambda r: r.log_loss)
    best = min(candidates.values(), key=lambda r: r.log_loss)
    chosen = best if best.log_loss < base.log_loss - MORE_FEATURES_GAIN else base
    say(f"chosen: {chosen.kind} on {'+'.join(chosen.feature_names)} (lowest CV log-loss; more features than {'+'.join(base_set)} only if "
        f"they gain > "
        f"{MORE_FEATURES_GAIN}; weights >= 0; each feature clipped to the range it was fit on)")
    say(f"  log-loss of always predicting the base rate {correct.mean():.4f}: {log_loss(np.full(len(correct), correct.mean()), correct):.4f}")
    calibrator = fit(cube.scores, correct, chosen.kind, chosen.feature_names, cube.parts)

    shipped = flat_bank(bundle.bank_texts, bundle.bank_vectors)
    dev_questions = read_lines(args.dev_list)

    def served(questions: list[str]) -> Rerank | None:
        return None if rerank is None else Rerank(rerank.reranker, encoder.encode(questions).vectors)

    dev_conf = confidence_on(calibrator, shipped, answer_vectors(bundle, encoder, dev_questions), dev_questions, fusion,
                             served(dev_questions))
    by_precision = choose_threshold(chosen.confidence, correct, PRECISION_TARGET)
    by_dev = float(np.ceil(dev_conf.max() * 100 + 1e-9) / 100)  # the 0.01 grid step above the most confident dev question
    threshold = max(by_precision, by_dev)
    say(f"\ndefault min_confidence {threshold:.2f} = max of {by_precision:.2f} (lowest on a 0.01 grid at which the answered validation "
        f"questions, cross-validated confidence, are >= {PRECISION_TARGET:.0%} gold) and {by_dev:.2f} (refuses every question of the dev "
        f"off-topic list {args.dev_list.name}, shipped bank)")
    kept = chosen.confidence >= threshold
    say(f"  at it, cross-validated: coverage {kept.mean():.4f}, precision of the answered {correct[kept].mean():.4f}")

    cv_report = calibration_report(chosen.confidence, correct)
    in_sample = calibration_report(calibrator.predict(cube.scores, cube.parts), correct)
    identity = search_map(bank, val.q, golds, calibrator if rerank is None else None, texts=questions, fusion=fusion)
    identity_cv = None if rerank is not None else calibration_report(identity.confidence, identity.hit)
    say(f"ECE of the chosen calibrator, cross-validated: {cv_report['ece_equal_width']:.4f} (equal-mass {cv_report['ece_equal_mass']:.4f}); "
        f"in-sample (fit on all validation): {in_sample['ece_equal_width']:.4f}")
    say("\nprecision–coverage (cube, cross-validated confidence): coverage / answered / precision / confidence threshold")
    for row in cv_report["precision_coverage"]:
        say(f"  {row['coverage']:>4.0%} {row['answered']:>5} {row['precision']:.4f} {row['threshold']:.4f}")

    fused_calibrator = load_calibration(args.bundle) if rerank is not None else calibrator
    fused_threshold = default_min_confidence(args.bundle) if rerank is not None else threshold
    evaluation = bank_evaluation(bank, val.q, outputs, golds, fused_calibrator, fused_threshold, texts=questions,
                                 fusion=fusion, resamples=args.resamples,
                                 rerank=None if rerank is None else Rerank(rerank.reranker, val.q, calibrator, threshold))
    say("\nopen bank, validation: P@1 / MRR@10 / R@20 (fused: precision / coverage at the default min_confidence, "
        "shipped calibrator)")
    for name in ("identity", "dense", "lexical", "fused", *(["reranked"] if rerank is not None else [])):
        f = evaluation[name]
        at = f" / {f['precision']:.4f} / {f['coverage']:.4f}" if "precision" in f else ""
        say(f"  {name:<9} {f['P@1']:.4f} / {f['MRR@10']:.4f} / {f['R@20']:.4f}{at}")
    for name, d in evaluation["differences"].items():
        say(f"  {name}: {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")

    offtopic = {}
    for label, path in (("dev", args.dev_list), ("test", args.test_list)):
        questions = read_lines(path)
        conf = confidence_on(calibrator, shipped, answer_vectors(bundle, encoder, questions), questions, fusion,
                             served(questions))
        offtopic[label] = {"file": path.name, "questions": len(questions), "refused": int((conf < threshold).sum()),
                           "max_confidence": float(conf.max()), "max_question": questions[int(conf.argmax())]}
        say(f"off-topic {label} list ({path.name}, shipped bank): {offtopic[label]['refused']}/{len(questions)} refused, "
            f"max confidence {conf.max():.4f} for {questions[int(conf.argmax())]!r}")

    record = {
        "bundle_id": bundle.manifest.extra.get("bundle_id"),
        "fit_on": {"split": "validation", "file": args.val.name, "sha256_16": file_hash(args.val), "pairs": len(val.pairs), "pairs_hash": val.data_hash},
        "bank": {"kind": "open: unique answer sentences of train + validation, exact flat search", "size": len(texts),
                 "train_file": args.train.name, "train_sha256_16": file_hash(args.train)},
        "label": "the top sentence of the model's fused search is the question's gold sentence"
                 + ("" if rerank is None else ", after the bundle's reranker reorders the fused top candidates"),
        "fusion": fusion.to_dict(),
        "features": list(chosen.feature_names), "kind": chosen.kind,
        "cv": {"folds": args.folds, "grouping": grouping, "criterion": "log-loss",
               "ece": chosen.ece, "ece_equal_mass": chosen.ece_equal_mass, "log_loss": chosen.log_loss,
               "all": [{"features": list(r.feature_names), "kind": r.kind, "ece": r.ece, "ece_equal_mass": r.ece_equal_mass, "log_loss": r.log_loss}
                       for r in candidates.values()]},
        "min_confidence": threshold,
        "min_confidence_rule": {"rule": "max of the two", "precision_target": PRECISION_TARGET, "by_precision": by_precision,
                                "by_dev_list": by_dev, "dev_list": args.dev_list.name},
    }
    if not args.no_save:
        file = RERANK_CALIBRATION if rerank is not None else CALIBRATION_FILE
        say(f"\nwrote {save_calibration(args.bundle, calibrator, record, file)}")

    result = {**record, "run": run_record("bench/calibration.py", sys.argv[1:] if argv is None else argv), "bank_eval": evaluation,
              "cube_cv": cv_report, "cube_in_sample": {k: in_sample[k] for k in ("ece_equal_width", "ece_equal_mass")},
              "identity_shipped_calibrator": identity_cv, "offtopic": offtopic, "calibrator": calibrator.to_dict()}
    if args.hybrid:
        result["hybrid"] = hybrid_figures(bundle, encoder, val, outputs, calibrator, say, questions, fusion)
    if args.plot and identity_cv is not None:
        plot(args.plot, {"cube": cv_report, "identity (shipped calibrator)": identity_cv}, cv_report["reliability"], cv_report["ece_equal_width"], threshold)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.txt:
        args.txt.parent.mkdir(parents=True, exist_ok=True)
        args.txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
