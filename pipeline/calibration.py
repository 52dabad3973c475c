"""Calibrated confidence: search scores of an answer -> probability that its bank sentence is right.

Features come from the top-k scores of one search (top fused score, its margin over the second, its
gap over the mean of the top 10) and, for a fused search, the parts of the top sentence's score
(`parts`: "dense" cosines, "lexical" BM25 over the question's best in the bank, "overlap" share of
the question's words the sentence holds): `dense_top`, `lex_top`, `lex_margin`, `overlap_top`. All
are relative to the question or the bank's own ranking, not to SQuAD's sentence lengths; `overlap_top`
tells a sentence that shares one rare word with a nonsense question (lexical part 1.0 after the
normalisation by the question's best) from one that shares most of its words. Two calibrators are
fit: logistic regression on the standardised features, and isotonic regression on the logistic
model's linear index (isotonic is one-dimensional; the index orders the questions, isotonic fixes the
shape). The kind and features are chosen by grouped cross-validation on the validation split. Both
serialise to plain JSON arrays: no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.checkpoint import CALIBRATION as CALIBRATION_FILE
from pipeline.errors import BundleError

KINDS = ("isotonic", "logistic")
FEATURES = ("top", "margin")  # the default feature set; the shipped one is in the bundle's calibration.json
KNOWN_FEATURES = ("top", "margin", "gap10", "dense_top", "lex_top", "lex_margin", "overlap_top", "rerank_top",
                  "rerank_margin")
Parts = Mapping[str, np.ndarray | None]  # "dense", "lexical", "overlap": (N, k) each, aligned with the scores


def features(scores: np.ndarray, names: Sequence[str] = FEATURES, parts: Parts | None = None) -> np.ndarray:
    """(N, k) descending search scores and their parts (missing for a dense search: the cosines are the scores, the
    lexical side zeros) -> (N, F) features named by `names`."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (N, k) with k >= 2, got {scores.shape}")

    def part(name: str) -> np.ndarray:
        value = (parts or {}).get(name)
        if value is None:
            return scores if name == "dense" else np.zeros_like(scores)
        return np.nan_to_num(np.asarray(value, np.float64))

    columns = {
        "top": lambda: scores[:, 0],
        "margin": lambda: scores[:, 0] - scores[:, 1],
        "gap10": lambda: scores[:, 0] - scores[:, :10].mean(1),
        "dense_top": lambda: part("dense")[:, 0],
        "lex_top": lambda: part("lexical")[:, 0],
        "lex_margin": lambda: part("lexical")[:, 0] - part("lexical")[:, 1],
        "overlap_top": lambda: part("overlap")[:, 0],
        "rerank_top": lambda: part("rerank")[:, 0],
        "rerank_margin": lambda: part("rerank")[:, 0] - part("rerank")[:, 1],
    }
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise ValueError(f"unknown calibration features {unknown}; known: {list(columns)}")
    return np.stack([columns[n]() for n in names], axis=1)


def needed_k(names: Sequence[str]) -> int:
    """How many top scores a search must return for these features."""
    return 10 if "gap10" in names else 2


@dataclass(frozen=True)
class Calibrator:
    """A fitted score -> probability map; `predict` takes the (N, k) top search scores."""

    kind: str  # "isotonic" or "logistic"
    feature_names: tuple[str, ...]
    mean: np.ndarray  # (F,) standardisation of the features
    scale: np.ndarray  # (F,)
    coef: np.ndarray  # (F,) logistic weights on the standardised features
    intercept: float
    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))  # isotonic: linear index knots, increasing
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))  # isotonic: probability at each knot
    low: np.ndarray | None = None  # (F,) smallest value of each feature it was fit on (None: older record, no clip)
    high: np.ndarray | None = None  # (F,) largest

    def index(self, scores: np.ndarray, parts: Parts | None = None) -> np.ndarray:
        """The logistic model's linear index (log-odds for the logistic kind), each feature clipped to the range it
        was fit on: a linear model's weights hold only where it saw data, and other banks' scores fall outside
        SQuAD's."""
        x = features(scores, self.feature_names, parts)
        if self.low is not None and self.high is not None:
            x = np.clip(x, self.low, self.high)
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def predict(self, scores: np.ndarray, parts: Parts | None = None) -> np.ndarray:
        """(N, k) descending search scores (and their parts) -> (N,) probabilities in [0, 1]."""
        z = self.index(scores, parts)
        if self.kind == "logistic":
            return 1.0 / (1.0 + np.exp(-z))
        return np.interp(z, self.thresholds, self.values)  # constant beyond the end knots, like clip

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind, "features": list(self.feature_names), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
            "coef": self.coef.tolist(), "intercept": self.intercept, "thresholds": self.thresholds.tolist(), "values": self.values.tolist(),
            **({} if self.low is None or self.high is None else {"low": self.low.tolist(), "high": self.high.tolist()}),
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Calibrator:
        def array(name: str) -> np.ndarray:
            return np.asarray(record.get(name, []), np.float64)

        kind = str(record["kind"])
        if kind not in KINDS:
            raise ValueError(f"calibrator kind must be one of {KINDS}, got {kind!r}")
        names = tuple(str(n) for n in record["features"])
        bounds = (array("low"), array("high")) if "low" in record and "high" in record else (None, None)
        cal = cls(kind, names, array("mean"), array("scale"), array("coef"), float(record["intercept"]),
                  array("thresholds"), array("values"), *bounds)
        if any(b is not None and len(b) != len(names) for b in bounds):
            raise ValueError("calibrator record has feature bounds of the wrong length")
        if len(cal.coef) != len(names) or (kind == "isotonic" and (len(cal.thresholds) == 0 or len(cal.thresholds) != len(cal.values))):
            raise ValueError("calibrator record has arrays of inconsistent length")
        return cal


def fit(
    scores: np.ndarray, correct: np.ndarray, kind: str, names: Sequence[str] = FEATURES, parts: Parts | None = None
) -> Calibrator:
    """Fits a calibrator of `kind` to (N, k) search scores (and their parts) and (N,) 0/1 correctness."""
    from sklearn.isotonic import IsotonicRegression

    if kind not in KINDS:
        raise ValueError(f"calibrator kind must be one of {KINDS}, got {kind!r}")
    y = np.asarray(correct, np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both correct and wrong answers")
    x = features(scores, names, parts)
    mean, scale = x.mean(0), np.clip(x.std(0), 1e-9, None)
    coef, intercept = monotone_logistic((x - mean) / scale, y)
    base = Calibrator("logistic", tuple(names), mean, scale, coef, intercept, low=x.min(0), high=x.max(0))
    if kind == "logistic":
        return base
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True)
    iso.fit(base.index(scores, parts), y)
    knots, values = np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64)
    return replace(base, kind="isotonic", thresholds=knots, values=values)


def monotone_logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Logistic regression (L2, C = 1, as sklearn's default) with every weight >= 0: a higher score, margin, cosine,
    lexical match or share of the question's words never lowers the confidence. Unconstrained, collinear features
    (top = cosine + a · lexical) take opposite signs that cancel on SQuAD and misfire elsewhere: a question sharing
    no word with the bank was made more confident by a negative weight on its lexical part."""
    from scipy.optimize import minimize

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ theta[:-1] + theta[-1]
        p = 1.0 / (1.0 + np.exp(-z))
        value = float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * theta[:-1] @ theta[:-1])
        grad = np.append(x.T @ (p - y) + theta[:-1], np.sum(p - y))
        return value, grad

    bounds = [(0.0, None)] * x.shape[1] + [(None, None)]
    theta = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds).x
    return theta[:-1].astype(np.float64), float(theta[-1])


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15, equal_mass: bool = False) -> float:
    """Σ_b (n_b / N)·|mean confidence_b − accuracy_b| over equal-width (or equal-count) bins of confidence."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    if equal_mass:
        order = np.argsort(confidence, kind="stable")
        groups = [g for g in np.array_split(order, bins) if len(g)]
    else:
        edges = np.clip(np.floor(confidence * bins).astype(int), 0, bins - 1)  # confidence 1.0 falls in the last bin
        groups = [np.flatnonzero(edges == b) for b in range(bins)]
    total = len(confidence)
    return float(sum(len(g) / total * abs(confidence[g].mean() - correct[g].mean()) for g in groups if len(g)))


def log_loss(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 outcomes, probabilities clipped to [1e-6, 1 − 1e-6]."""
    p = np.clip(np.asarray(confidence, np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(correct, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def grouped_folds(groups: np.ndarray, folds: int) -> list[np.ndarray]:
    """Row indices of each held-out fold: whole groups, assigned in order of first appearance to
    `folds` contiguous runs of about equal size, so no group straddles two folds."""
    groups = np.asarray(groups)
    order = list(dict.fromkeys(groups.tolist()))
    if len(order) < folds:
        raise ValueError(f"{len(order)} groups cannot make {folds} folds")
    sizes = np.array([np.sum(groups == g) for g in order])
    cut = np.searchsorted(np.cumsum(sizes), np.linspace(0, sizes.sum(), folds + 1)[1:-1], side="left")
    fold_of = np.zeros(len(order), int)
    for boundary in cut:
        fold_of[boundary + 1 :] += 1
    fold_of = np.minimum(fold_of, folds - 1)
    group_fold = dict(zip(order, fold_of))
    assignment = np.array([group_fold[g] for g in groups.tolist()])
    return [np.flatnonzero(assignment == f) for f in range(folds) if np.any(assignment == f)]


@dataclass(frozen=True)
class CVResult:
    """Out-of-fold confidences of one calibrator kind and their pooled figures."""

    kind: str
    feature_names: tuple[str, ...]
    confidence: np.ndarray  # (N,) each predicted by a calibrator that never saw its fold
    ece: float
    ece_equal_mass: float
    log_loss: float


def cross_validate(
    scores: np.ndarray, correct: np.ndarray, groups: np.ndarray, kind: str, names: Sequence[str] = FEATURES,
    folds: int = 6, parts: Parts | None = None,
) -> CVResult:
    """Out-of-fold confidences with whole groups (articles) held out together."""
    confidence = np.empty(len(correct))
    present = {name: value for name, value in (parts or {}).items() if value is not None}
    for held in grouped_folds(groups, folds):
        train = np.setdiff1d(np.arange(len(correct)), held)
        model = fit(scores[train], correct[train], kind, names, {n: v[train] for n, v in present.items()})
        confidence[held] = model.predict(scores[held], {n: v[held] for n, v in present.items()})
    return CVResult(kind, tuple(names), confidence, expected_calibration_error(confidence, correct),
                    expected_calibration_error(confidence, correct, equal_mass=True), log_loss(confidence, correct))


def choose(results: Sequence[CVResult]) -> CVResult:
    """The kind with the lowest cross-validated log-loss (a proper score: rewards calibration and sharpness)."""
    return min(results, key=lambda r: r.log_loss)


RERANK_CALIBRATION = "rerank-calibration.json"  # the calibrator of reranked answers (fit on the rerank stage's scores)


def save_calibration(bundle_dir: Path, cal: Calibrator, record: dict[str, object] | None = None,
                     file: str = CALIBRATION_FILE) -> Path:
    """Writes `file` (calibration.json, or RERANK_CALIBRATION) in the bundle: the calibrator plus what it was fit on."""
    path = Path(bundle_dir) / file
    path.write_text(json.dumps({**(record or {}), "calibrator": cal.to_dict()}, indent=2) + "\n", encoding="utf-8")
    return path


def read_calibration(bundle_dir: Path, file: str = CALIBRATION_FILE) -> dict[str, Any] | None:
    """The bundle's whole calibration record in `file`, or None when it ships none."""
    path = Path(bundle_dir) / file
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("calibrator"), dict):
        raise BundleError(f"{path}: no 'calibrator' object")
    return record


def load_calibration(bundle_dir: Path, file: str = CALIBRATION_FILE) -> Calibrator | None:
    """The bundle's calibrator in `file`, or None when it ships none."""
    record = read_calibration(bundle_dir, file)
    if record is None:
        return None
    try:
        return Calibrator.from_dict(record["calibrator"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{Path(bundle_dir) / file}: bad calibrator ({exc})") from exc


def resolve_min_confidence(job: float | None, setting: float | None, bundle: float | None) -> float | None:
    """The threshold an answer is judged against: the job's own, else the worker's setting (CUBEQA_MIN_CONFIDENCE),
    else the bundle's calibrated default; None refuses nothing."""
    return next((value for value in (job, setting, bundle) if value is not None), None)


def default_min_confidence(bundle_dir: Path, file: str = CALIBRATION_FILE) -> float | None:
    """The min_confidence the bundle's calibration (in `file`) chose on validation, or None."""
    record = read_calibration(bundle_dir, file)
    value = None if record is None else record.get("min_confidence")
    return None if value is None else float(value)
