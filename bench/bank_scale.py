"""Bank search at scale: build time, index memory, search time per query at batch 1 and 64, recall@1 against exact search.

    .venv/bin/python bench/bank_scale.py [--sizes 100000,1000000] [--kinds auto,flat] [--queries 1000] [--json PATH]

Vectors. The real ones are teacher embeddings of the SQuAD sentences in data/ (train and validation
answers, de-duplicated; cached by `load_embedded`), plus, with `--extra-answers`, answer vectors read from a
safetensors file (a bundle's bank.safetensors holds the training answers' teacher embeddings). A bank of `n` sentences is those real answers,
planted at random rows, plus `n - answers` generated vectors: each is a real answer pulled toward
the real mean and mixed with Gaussian noise of the real covariance,
x = normalise(mean + sqrt(1 - s^2) (a - mean) + s L z), L L^T = covariance, z ~ N(0, I), so the mean
and covariance are the real ones for every s (s = 1 is a Gaussian of the real moments, s = 0 copies of
real answers). s is chosen from a grid so that nearest-neighbour scores inside a generated set of the
real size match those inside the real set; both distributions, and the pairwise cosines, are printed.

Queries are real questions (never in the bank); their true neighbours are the planted real answers.
Recall@1 is the share of queries whose returned top-1 scores as high as the exact (brute-force) top-1
on the same bank. Each size and kind builds the index of `pipeline.knowledge.index` (auto = the kind
`choose_index` picks for that size), times the build (train + add), writes it with `faiss.write_index`
for its size on disk, reads the resident-memory growth, and times searches of k=1: one query a call
(median and p90 over `--timed` queries, after a warm-up) and 64 a call (mean per query over all).
Banks too large to hold as float32 within `--max-gb` are generated chunk by chunk and only `ivfpq` can
index them (the exact answers are streamed too).
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common
import numpy as np

GRID = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
PROBES = 2000  # vectors whose nearest-neighbour score checks the generator
CHUNK = 131_072  # vectors generated at a time


class Generator:
    """Unit vectors with the real answers' mean and covariance, drawn around real answers (module docstring)."""

    def __init__(self, real: np.ndarray, s: float, seed: int) -> None:
        self.real = real.astype(np.float64)
        self.mean = self.real.mean(axis=0)
        centred = self.real - self.mean
        covariance = centred.T @ centred / (len(real) - 1)
        self.chol = np.linalg.cholesky(covariance + 1e-9 * np.eye(real.shape[1]))
        self.s, self.seed = s, seed

    def chunk(self, count: int, key: int) -> np.ndarray:
        """`count` generated unit vectors (count, D) float32; the same `key` gives the same vectors."""
        rng = np.random.default_rng([self.seed, key])
        parents = self.real[rng.integers(len(self.real), size=count)]
        noise = rng.standard_normal((count, self.real.shape[1])) @ self.chol.T
        x = self.mean + np.sqrt(1 - self.s**2) * (parents - self.mean) + self.s * noise
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def extra_answers(path: Path, answers: np.ndarray) -> np.ndarray:
    """Unit answer vectors read from a safetensors file (key `vectors`, e.g. a bundle's bank), minus exact copies of `answers`."""
    from safetensors.numpy import load_file

    extra = load_file(str(path))["vectors"].astype(np.float32)
    seen = {row.tobytes() for row in answers}
    keep = [i for i, row in enumerate(extra) if row.tobytes() not in seen and not seen.add(row.tobytes())]
    return extra[keep]


def real_data(paths: list[Path], seed: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real answer vectors (unique) of the Q→A files, `queries` of their real question vectors and each one's answer row."""
    from pipeline.encoder import TeacherEncoder
    from pipeline.workflows import load_embedded

    encoder = TeacherEncoder()
    splits = [load_embedded(path, encoder, common.settings().cache_dir) for path in paths]
    pairs = [pair for split in splits for pair in split.pairs]
    first: dict[str, int] = {}  # answer text -> its first pair
    for i, pair in enumerate(pairs):
        first.setdefault(pair.answer, i)
    row = {text: r for r, text in enumerate(first)}
    answers = np.concatenate([split.a for split in splits])[list(first.values())]
    chosen = np.random.default_rng(seed).choice(len(pairs), size=min(queries, len(pairs)), replace=False)
    q = np.concatenate([split.q for split in splits])[chosen]
    return answers.astype(np.float32), q.astype(np.float32), np.array([row[pairs[i].answer] for i in chosen])


def quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in (1, 10, 50, 90, 99)} | {"mean": float(values.mean())}


def set_statistics(vectors: np.ndarray, rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Cosines of random pairs, and each of `PROBES` vectors' best score against the rest of the set."""
    a, b = rng.integers(len(vectors), size=(2, 200_000))
    keep = a != b
    pairs = np.sum(vectors[a[keep]] * vectors[b[keep]], axis=1)
    probes = min(PROBES, len(vectors) // 4)
    nearest = (vectors[:probes] @ vectors[probes:].T).max(axis=1)
    return {"pair_cosine": quantiles(pairs), "nearest_score": quantiles(nearest)}


def calibrate(real: np.ndarray, seed: int) -> tuple[float, list[dict[str, Any]]]:
    """The s of the grid whose generated set (real size, parents drawn with replacement as at scale) has the
    nearest-neighbour score quantiles closest to the real set's; every grid point's statistics."""
    rng = np.random.default_rng(seed)
    shuffled = real[rng.permutation(len(real))]
    target = set_statistics(shuffled, rng)
    rows = [{"s": None, **target}]
    best, best_gap = 1.0, np.inf
    for s in GRID:
        stats = set_statistics(Generator(real, s, seed).chunk(len(real), key=2**62), rng)  # a key no bank chunk uses
        gap = max(abs(stats["nearest_score"][k] - target["nearest_score"][k]) for k in ("p10", "p50", "p90"))
        rows.append({"s": s, "nearest_gap": gap, **stats})
        if gap < best_gap:
            best, best_gap = s, gap
    return best, rows


class Bank:
    """A bank of `n` vectors: the real answers at random rows, generated vectors elsewhere, made chunk by chunk."""

    def __init__(self, n: int, real: np.ndarray, generator: Generator, seed: int) -> None:
        self.n, self.real, self.generator = n, real, generator
        self.planted = np.random.default_rng([seed, n]).choice(n, size=len(real), replace=False)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, (rows, D) float32) over the whole bank."""
        order = np.argsort(self.planted)
        rows, sources = self.planted[order], order
        for start in range(0, self.n, CHUNK):
            block = self.generator.chunk(min(CHUNK, self.n - start), key=start)
            lo, hi = np.searchsorted(rows, [start, start + len(block)])
            block[rows[lo:hi] - start] = self.real[sources[lo:hi]]
            yield start, block

    def array(self) -> np.ndarray:
        out = np.empty((self.n, self.real.shape[1]), dtype=np.float32)
        for start, block in self.chunks():
            out[start : start + len(block)] = block
        return out


def exact_top1(bank: Bank, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force best row and score of each query, streamed over the bank."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    rows = np.zeros(len(queries), dtype=np.int64)
    for start, block in bank.chunks():
        scores = queries @ block.T
        top = scores.argmax(axis=1)
        better = scores[np.arange(len(queries)), top] > best
        best[better], rows[better] = scores[better, top[better]], start + top[better]
    return rows, best


def rss_mb() -> float:
    return common.memory_of(os.getpid())["rss_mb"]


class Progress:
    """Prints the share of vectors added and the time so far, every tenth of the bank."""

    def __init__(self, n: int) -> None:
        self.n, self.done, self.started, self.next = n, 0, time.perf_counter(), n / 10

    def __call__(self, added: int) -> None:
        self.done += added
        if self.done >= self.next:
            print(f"  added {self.done}/{self.n} in {time.perf_counter() - self.started:.0f} s", flush=True)
            self.next += self.n / 10


def build(bank: Bank, vectors: np.ndarray | None, spec) -> Any:  # IndexSpec
    """The index of `spec` over the bank: by `build_index` when the bank is held, else trained on a strided
    sample and filled chunk by chunk."""
    from pipeline.knowledge.index import apply_search_params, build_index, empty_index, training_sample

    if vectors is not None:
        return build_index(vectors, spec, progress=Progress(bank.n))
    index = empty_index(bank.real.shape[1], spec, bank.n)
    sample_size = len(training_sample(np.empty((bank.n, 0), np.float32), spec, index))
    sample = np.concatenate([block[:: max(1, bank.n // sample_size)] for _, block in bank.chunks()])[:sample_size]
    index.train(np.ascontiguousarray(sample))
    del sample
    for _, block in bank.chunks():
        index.add(block)
    apply_search_params(index, spec)
    return index


def measure(index, queries: np.ndarray, timed: int) -> dict[str, Any]:  # faiss.Index
    """Search times at batch 1 and 64 (ms a query) and the top-1 row of every query."""
    for i in range(min(20, len(queries))):
        index.search(queries[i : i + 1], 1)
    single = []
    for i in range(min(timed, len(queries))):
        started = time.perf_counter()
        index.search(queries[i : i + 1], 1)
        single.append(1000 * (time.perf_counter() - started))
    index.search(queries[:64], 1)  # warm-up: OpenMP and BLAS start their threads
    found = np.zeros(len(queries), dtype=np.int64)
    started = time.perf_counter()
    for start in range(0, len(queries), 64):
        found[start : start + 64] = index.search(queries[start : start + 64], 1)[1][:, 0]
    batch_ms = 1000 * (time.perf_counter() - started) / len(queries)
    return {"batch1_ms": {"median": float(np.median(single)), "p90": float(np.percentile(single, 90)), "queries": len(single)},
            "batch64_ms_per_query": batch_ms, "found": found}


def run(bank: Bank, vectors: np.ndarray | None, kind: str, queries: np.ndarray, truth: tuple, answer_rows: np.ndarray, args) -> list[dict[str, Any]]:
    """One kind over one bank: every figure of the table, at the default search parameter and at each of `--sweep`."""
    import faiss

    from pipeline.knowledge.index import apply_search_params, choose_index

    spec = choose_index(bank.n, kind=None if kind == "auto" else kind)
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    index = build(bank, vectors, spec)
    build_s = time.perf_counter() - started
    gc.collect()
    grown = rss_mb() - before
    with tempfile.TemporaryDirectory() as folder:
        faiss.write_index(index, str(Path(folder) / "index.faiss"))
        file_mb = (Path(folder) / "index.faiss").stat().st_size / 2**20
    knob = {"hnsw": "ef_search", "hnsw_sq8": "ef_search", "ivfpq": "nprobe"}.get(spec.kind)
    values = [spec.params[knob], *(v for v in args.sweep if v != spec.params[knob])] if knob else [None]
    rows, best = truth
    out = []
    for value in values:
        searched = spec if value is None else type(spec)(spec.kind, {**spec.params, knob: value})
        apply_search_params(index, searched)
        figures = measure(index, queries, args.timed)
        found = figures.pop("found")
        out.append({
            "kind": spec.kind, "params": searched.params, "auto": kind == "auto" and searched == spec, "build_s": build_s,
            "index_file_mb": file_mb, "rss_growth_mb": grown, **figures,
            "recall_at_1": float(np.mean(found_scores_of(bank, vectors, found, queries) >= best - 1e-5)),
            "answer_at_1": float(np.mean(found == bank.planted[answer_rows])),
            "exact_answer_at_1": float(np.mean(rows == bank.planted[answer_rows])),
        })
    return out


def found_scores_of(bank: Bank, vectors: np.ndarray | None, found: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The exact score of each query's returned row (-inf where none was returned)."""
    scores = np.full(len(found), -np.inf, dtype=np.float32)
    if vectors is not None:
        ok = found >= 0
        scores[ok] = np.sum(vectors[found[ok]] * queries[ok], axis=1)
        return scores
    for start, block in bank.chunks():
        inside = (found >= start) & (found < start + len(block))
        scores[inside] = np.sum(block[found[inside] - start] * queries[inside], axis=1)
    return scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=common.sizes, default=[100_000, 1_000_000], help="bank sizes (sentences)")
    p.add_argument("--kinds", default="auto,flat", help="index kinds per size: auto (choose_index's pick), flat, hnsw, hnsw_sq8, ivfpq")
    p.add_argument("--queries", type=int, default=1000, help="real questions searched (recall, batch 64)")
    p.add_argument("--timed", type=int, default=300, help="of them, searched one a call for the batch-1 times")
    p.add_argument("--sweep", type=common.sizes, default=[32, 128], help="other ef_search (HNSW) or nprobe (IVF) values searched on the same index")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="FAISS OpenMP threads")
    p.add_argument("--max-gb", type=float, default=4.0, help="largest bank held as float32; larger ones are streamed (ivfpq only)")
    p.add_argument("--real", type=lambda v: [Path(x) for x in v.split(",")], default=[common.DATA, common.VAL], help="Q→A files of the real vectors")
    p.add_argument("--extra-answers", type=Path, default=None,
                   help="safetensors of more real answer vectors (key vectors, same teacher) planted as real parents, read instead of embedded")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON to this path")
    args = p.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    load_before = list(os.getloadavg())
    real, queries, answer_rows = real_data(args.real, args.seed, args.queries)
    print(f"{len(real)} real answers, {len(queries)} real questions from {', '.join(p.name for p in args.real)}", flush=True)
    extra = 0
    if args.extra_answers:
        more = extra_answers(args.extra_answers, real)
        real, extra = np.concatenate([real, more]), len(more)  # appended: answer_rows still index the question files' answers
        print(f"{extra} more real answers read from {args.extra_answers}", flush=True)
    s, checks = calibrate(real, args.seed)
    generator = Generator(real, s, args.seed)
    common.table(
        f"generator check at the real size ({len(real)} answers; {min(PROBES, len(real) // 4)} probes): chosen s = {s}",
        ["set", "s", "pair cos p1", "p50", "p99", "nearest p10", "p50", "p90", "gap"],
        [["real" if c["s"] is None else "generated", "" if c["s"] is None else c["s"], *(c["pair_cosine"][k] for k in ("p1", "p50", "p99")),
          *(c["nearest_score"][k] for k in ("p10", "p50", "p90")), c.get("nearest_gap", "")] for c in checks],
    )
    results, skipped = [], []
    for n in args.sizes:
        bank = Bank(n, real, generator, args.seed)
        held = n * real.shape[1] * 4 <= args.max_gb * 2**30
        kinds = [k for k in args.kinds.split(",") if k]
        if not held:
            from pipeline.knowledge.index import auto_kind

            skipped += [{"size": n, "kind": k, "why": f"float32 bank over --max-gb {args.max_gb}; only ivfpq streams"}
                        for k in kinds if (auto_kind(n) if k == "auto" else k) != "ivfpq"]
            kinds = [k for k in kinds if (auto_kind(n) if k == "auto" else k) == "ivfpq"]
        vectors = bank.array() if held else None
        truth = exact_top1(bank, queries)
        for kind in kinds:
            print(f"size {n}: {kind} ...", flush=True)
            results += [{"size": n, **row} for row in run(bank, vectors, kind, queries, truth, answer_rows, args)]
        del vectors
    common.table(
        f"{len(queries)} real questions, k=1, {args.threads} FAISS threads; recall@1 against exact search on the same bank",
        ["size", "kind", "params", "build s", "file MB", "RSS +MB", "b1 med ms", "b1 p90 ms", "b64 ms/q", "recall@1", "answer@1", "exact answer@1"],
        [[r["size"], r["kind"] + (" (auto)" if r["auto"] else ""), ",".join(f"{k}={v}" for k, v in r["params"].items()) or "-", r["build_s"],
          r["index_file_mb"], r["rss_growth_mb"], r["batch1_ms"]["median"], r["batch1_ms"]["p90"], r["batch64_ms_per_query"],
          r["recall_at_1"], r["answer_at_1"], r["exact_answer_at_1"]] for r in results],
    )
    for item in skipped:
        print(f"skipped {item['kind']} at {item['size']}: {item['why']}")
    common.write_json(args.json, {
        "real_answers": len(real), "extra_answers": extra, "extra_answers_file": str(args.extra_answers or ""), "queries": len(queries), "threads": args.threads, "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()), "generator": {"s": s, "checks": checks}, "results": results, "skipped": skipped,
    })


if __name__ == "__main__":
    main()
