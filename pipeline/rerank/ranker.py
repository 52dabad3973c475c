"""The learning-to-rank reranker: LightGBM LambdaMART over `features.hit_features`, saved in the bundle as
LightGBM's own text model (`rerank.txt`) beside a JSON manifest (`rerank.json`: features, depth, training
record, sha256 of the model file). No pickle; a model file that does not hash to its manifest is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import BundleError
from pipeline.knowledge.fusion import Hits
from pipeline.knowledge.lexical import LexicalIndex
from pipeline.rerank.features import CATEGORICAL, NAMES, hit_features

MODEL_FILE = "rerank.txt"
MANIFEST_FILE = "rerank.json"
FORMAT_VERSION = 1
KIND = "lightgbm-lambdarank"


@dataclass(frozen=True)
class RankerConfig:
    """The fixed training schedule (no checkpoint picked by its luck): trees, learning rate, leaves, depth k."""

    depth: int = 20  # candidates of the fused search reranked per question
    trees: int = 300
    learning_rate: float = 0.05
    leaves: int = 31
    min_child_samples: int = 20
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Reranker:
    """A trained ranker: scores each question's fused top `depth` and reorders them by that score."""

    booster: Any  # lightgbm.Booster
    config: RankerConfig
    record: dict[str, Any] = field(default_factory=dict)  # training and validation figures

    @property
    def depth(self) -> int:
        return self.config.depth

    def score(self, features: np.ndarray) -> np.ndarray:
        """(N, k, F) features -> (N, k) scores (NaN rows score -inf)."""
        n, k, f = features.shape
        flat = features.reshape(n * k, f)
        scores = np.full(n * k, -np.inf)
        live = ~np.isnan(flat[:, 0])
        if live.any():
            scores[live] = self.booster.predict(flat[live], num_threads=1)
        return scores.reshape(n, k)

    def rerank(self, hits: Hits, questions: Sequence[str], teacher: np.ndarray | None, bank: Any) -> Hits:
        """Each question's first `depth` candidates of `bank` (texts, vectors, lexical) reordered by the ranker's
        score (`Hits.rerank`), best first; `teacher`: the questions' teacher vectors (N, D)."""
        lexical: LexicalIndex | None = getattr(bank, "lexical", None)
        features, _ = hit_features(hits, questions, teacher, bank.texts, bank.vectors, lexical, self.depth)
        return reorder(hits, self.score(features))

    def save(self, bundle_dir: Path) -> dict[str, Any]:
        """Writes rerank.txt and rerank.json into the bundle; returns the manifest."""
        text = self.booster.model_to_string()
        (bundle_dir / MODEL_FILE).write_text(text, encoding="utf-8")
        manifest = {
            "format_version": FORMAT_VERSION, "kind": KIND, "file": MODEL_FILE,
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "features": list(NAMES),
            "config": self.config.to_dict(), **self.record,
        }
        (bundle_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return manifest


def reorder(hits: Hits, scores: np.ndarray) -> Hits:
    """`hits` cut to the scored depth and sorted by `scores` (N, k), stable for ties."""
    k = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")

    def take(values: np.ndarray) -> np.ndarray:
        return np.take_along_axis(values[:, :k], order, axis=1)

    return replace(
        hits, scores=take(hits.scores), rows=take(hits.rows), dense=take(hits.dense),
        lexical=None if hits.lexical is None else take(hits.lexical),
        overlap=None if hits.overlap is None else take(hits.overlap), rerank=take(scores),
    )


def has_reranker(bundle_dir: Path) -> bool:
    return (Path(bundle_dir) / MANIFEST_FILE).is_file()


def reranks_by_default(bundle_dir: Path) -> bool:
    """Whether jobs that do not say are reranked: the bundle has a reranker and the confidence fit on its scores
    (rerank-calibration.json). A reranker without it would answer everything, refusing nothing."""
    from pipeline.calibration import RERANK_CALIBRATION

    return has_reranker(bundle_dir) and (Path(bundle_dir) / RERANK_CALIBRATION).is_file()


def reranker_depth(bundle_dir: Path) -> int | None:
    """Candidates per question the bundle's reranker reads (what the decode stage retrieves for it); None: no reranker."""
    if not has_reranker(bundle_dir):
        return None
    try:
        return int(json.loads((Path(bundle_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))["config"]["depth"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{Path(bundle_dir) / MANIFEST_FILE}: no readable config.depth ({exc})") from exc


def load_reranker(bundle_dir: Path) -> Reranker:
    """The bundle's reranker; BundleError when its files are missing, altered or of another format."""
    import lightgbm

    path = Path(bundle_dir)
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        text = (path / manifest.get("file", MODEL_FILE)).read_text(encoding="utf-8")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read the reranker in {path}: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("kind") != KIND:
        raise BundleError(f"{path / MANIFEST_FILE}: reranker {manifest.get('kind')!r} format "
                          f"{manifest.get('format_version')!r}; this code reads {KIND} format {FORMAT_VERSION}")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != manifest.get("sha256"):
        raise BundleError(f"{path / MODEL_FILE} hashes to {digest[:12]}, not to its manifest's {str(manifest.get('sha256'))[:12]}: "
                          "the reranker was changed after training; retrain it (cubeqa train) or restore the file")
    if list(manifest.get("features", [])) != list(NAMES):
        raise BundleError(f"{path / MANIFEST_FILE}: the reranker was trained on features {manifest.get('features')}, "
                          f"this code computes {list(NAMES)}")
    try:
        config = RankerConfig(**manifest["config"])
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{path / MANIFEST_FILE}: no readable config ({exc})") from exc
    record = {k: v for k, v in manifest.items() if k not in ("format_version", "kind", "file", "sha256", "features", "config")}
    return Reranker(lightgbm.Booster(model_str=text), config, record)


def train_ranker(features: np.ndarray, present: np.ndarray, gold: np.ndarray, config: RankerConfig,
                 on_progress: Any = None) -> Reranker:
    """Fits LambdaMART on (N, k, F) features of training questions whose gold is among their k candidates
    (`gold` (N, k) 0/1); questions without a gold candidate teach nothing to a ranker and are left out."""
    import lightgbm

    useful = gold.any(axis=1)
    rows, labels, groups = [], [], []
    for i in np.flatnonzero(useful):
        m = int(present[i].sum())
        rows.append(features[i, :m])
        labels.append(gold[i, :m])
        groups.append(m)
    started = time.perf_counter()
    model = lightgbm.LGBMRanker(
        objective="lambdarank", n_estimators=config.trees, learning_rate=config.learning_rate,
        num_leaves=config.leaves, min_child_samples=config.min_child_samples, random_state=config.seed,
        deterministic=True, force_row_wise=True, n_jobs=1, verbose=-1,
    )
    callbacks = [] if on_progress is None else [lambda env: on_progress(env.iteration + 1, config.trees)]
    model.fit(np.concatenate(rows), np.concatenate(labels).astype(int), group=groups,
              categorical_feature=[NAMES.index(c) for c in CATEGORICAL], callbacks=callbacks)
    record = {"training": {"questions": int(useful.sum()), "left_out_no_gold": int((~useful).sum()),
                           "seconds": round(time.perf_counter() - started, 1)}}
    return Reranker(model.booster_, config, record)
