"""Quality metrics and baselines, defined once (names as in DESIGN.md).

All vectors are L2-normalised teacher embeddings and every mean is over samples.
Gains are paired per-sample differences with a 95% bootstrap interval: a gain
counts only when its interval excludes zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.baselines import MeanAnswer, MeanShift, NearestQuestion, ResidualRidge, Ridge
from pipeline.data import EmbeddedPairs
from pipeline.metrics import cube_cos, decode_fidelity, e2e_cos, echo_rate

VectorMap = Callable[[np.ndarray], np.ndarray]
COMPARED = ("identity", "mean_shift", "residual_ridge")  # baselines the cube gets paired differences against


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% bootstrap interval."""

    mean: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


def paired_bootstrap(diff: np.ndarray, resamples: int = 2000, seed: int = 0) -> Interval:
    """Mean of per-sample differences and its percentile 95% interval over resampled samples."""
    diff = np.asarray(diff, np.float64)
    rng = np.random.default_rng(seed)
    n = len(diff)
    step = max(1, 4_000_000 // n)  # resamples drawn at a time: the index array stays near 32 MB for any n
    means = np.concatenate([diff[rng.integers(0, n, (min(step, resamples - start), n))].mean(1) for start in range(0, resamples, step)])
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(diff.mean()), float(low), float(high))


def retrieval_ranks(queries: np.ndarray, bank: np.ndarray, targets: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """1-based rank of bank row `targets[i]` among all rows for query i; a tie counts against it."""
    ranks = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ bank.T  # (n, K)
        true = scores[np.arange(len(scores)), targets[start : start + chunk]]
        ranks[start : start + chunk] = (scores >= true[:, None]).sum(1)  # the target itself counts once
    return ranks


def retrieval_metrics(ranks: np.ndarray) -> dict[str, float]:
    """R@1, R@10 and MRR from 1-based ranks."""
    return {"R@1": float((ranks == 1).mean()), "R@10": float((ranks <= 10).mean()), "MRR": float((1.0 / ranks).mean())}


@dataclass(frozen=True)
class Bank:
    """De-duplicated answer sentences with their vectors, keyed by answer id."""

    ids: list[str]
    vectors: np.ndarray  # (K, D)

    @classmethod
    def from_pairs(cls, *splits: EmbeddedPairs) -> Bank:
        rows: dict[str, np.ndarray] = {}
        for split in splits:
            for answer_id, vector in zip(split.answer_ids, split.a):
                rows.setdefault(answer_id, vector)
        return cls(ids=list(rows), vectors=np.stack(list(rows.values())))

    def rows_of(self, answer_ids: list[str]) -> np.ndarray:
        position = {answer_id: row for row, answer_id in enumerate(self.ids)}
        return np.array([position[a] for a in answer_ids])


@dataclass
class EvalReport:
    """Every figure of one evaluation; `to_dict` is the `--json` output."""

    split_size: int
    train_size: int
    cos: dict[str, float] = field(default_factory=dict)  # cube_cos, identity_cos and baselines
    retrieval: dict[str, dict[str, float]] = field(default_factory=dict)  # open bank, per map
    e2e: dict[str, float] = field(default_factory=dict)  # e2e_cos, decode_fidelity, echo_rate per bank; identity_* beside
    differences: dict[str, Interval] = field(default_factory=dict)  # "cube − identity: cos" -> interval
    bank_sizes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. the split overlaps the training data

    def to_dict(self) -> dict[str, object]:
        return {
            "split_size": self.split_size,
            "train_size": self.train_size,
            "cos": self.cos,
            "retrieval_open_bank": self.retrieval,
            "e2e": self.e2e,
            "differences": {name: interval.to_dict() for name, interval in self.differences.items()},
            "bank_sizes": self.bank_sizes,
            "warnings": self.warnings,
        }


def evaluate(
    cube: VectorMap,
    train: EmbeddedPairs,
    split: EmbeddedPairs,
    *,
    inputs: np.ndarray | None = None,
    rows: dict[str, np.ndarray] | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> EvalReport:
    """The model ("cube": `cube` applied to `inputs`, by default the split's teacher vectors; with a question tower, the
    tower's vectors) against every baseline on `split`; baselines and the closed bank come from `train`. `rows` adds
    other models' outputs on the split (the tower alone, the cube without a tower), each paired against identity and
    the model."""
    q, a = split.q, split.a
    maps: dict[str, VectorMap] = {
        "cube": lambda x: cube(x if inputs is None else inputs),
        "identity": lambda x: x,
        "mean_shift": MeanShift.fit(train.q, train.a),
        "ridge": Ridge.fit(train.q, train.a),
        "residual_ridge": ResidualRidge.fit(train.q, train.a),
        "mean_answer": MeanAnswer.fit(train.q, train.a),
        "nearest_question": NearestQuestion.fit(train.q, train.a),
    }
    outputs = {name: fn(q) for name, fn in maps.items()} | dict(rows or {})
    per_sample = {name: cube_cos(out, a) for name, out in outputs.items()}
    report = EvalReport(split_size=len(q), train_size=len(train.q))
    seen = {pair.question for pair in train.pairs}
    overlap = sum(pair.question in seen for pair in split.pairs)
    if overlap:
        report.warnings.append(f"{overlap} of {len(split.pairs)} questions of this split are in the training data: these figures are not held-out")
    report.cos = {f"{name}_cos": float(values.mean()) for name, values in per_sample.items()}

    open_bank = Bank.from_pairs(train, split)
    closed_bank = Bank.from_pairs(train)
    report.bank_sizes = {"open": len(open_bank.ids), "closed": len(closed_bank.ids)}
    targets = open_bank.rows_of(split.answer_ids)
    extra = list(rows or {})
    ranks = {name: retrieval_ranks(outputs[name], open_bank.vectors, targets) for name in ("cube", *COMPARED, *extra)}
    report.retrieval = {name: retrieval_metrics(r) for name, r in ranks.items()}

    for bank_name, bank in (("closed", closed_bank), ("open", open_bank)):
        for name, prefix in (("cube", ""), ("identity", "identity_")):
            decoded = bank.vectors[np.argmax(outputs[name] @ bank.vectors.T, axis=1)]  # phrase-bank decode
            report.e2e[f"{prefix}e2e_cos_{bank_name}"] = float(e2e_cos(decoded, a).mean())
            report.e2e[f"{prefix}decode_fidelity_{bank_name}"] = float(decode_fidelity(decoded, outputs[name]).mean())
            report.e2e[f"{prefix}echo_rate_{bank_name}"] = echo_rate(decoded, q, a)

    pairs = [("cube", base) for base in (*COMPARED, *extra)] + [(name, "identity") for name in extra]
    for model, base in pairs:
        label = f"{model} − {base}"
        report.differences[f"{label}: cos"] = paired_bootstrap(per_sample[model] - per_sample[base], resamples, seed)
        hit = (ranks[model] == 1).astype(float) - (ranks[base] == 1).astype(float)
        report.differences[f"{label}: R@1"] = paired_bootstrap(hit, resamples, seed)
        report.differences[f"{label}: MRR"] = paired_bootstrap(1.0 / ranks[model] - 1.0 / ranks[base], resamples, seed)
    return report
