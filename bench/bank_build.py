"""Bank builds in-process against distributed ones on one and two encode workers, and question latency during a build.

    .venv/bin/python bench/bank_build.py [--sentences 6000] [--chunk 512] [--questions 20] [--runs 1]
        [--broker redis://127.0.0.1:6379/7] [--json PATH]

Every build starts from a cold embedding cache and ends with the bank version written; sentences/s is
unique sentences over that time. The in-process build is `BankStore.build` with the teacher in this
process (torch's default intra-op threads); the distributed one is `tasks.corpus.embed_on_workers`
(chunks on the `embed` queue) followed by the same `BankStore.build`, which then finds every vector
cached. Worker set-ups: one and two `cubeqa worker --stage encode`, each with `--concurrency 1` and
with the default concurrency (one pool thread per core). Each set-up's in-process build runs just
before it, so a ratio compares builds under the same load. Question latency is one question per batch
through the real producer (micro-batch 1), from `submit` to its result in SQL, idle and while a
distributed build runs on the default set-up with one encode worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import common

from pipeline.knowledge.store import BankStore


def corpus(data: Path, count: int, folder: Path) -> tuple[Path, list[str]]:
    """The first `count` unique answers of a Q→A file, one document each."""
    texts: dict[str, None] = {}
    with data.open(encoding="utf-8") as handle:
        for line in handle:
            texts.setdefault(json.loads(line)["answer"], None)
            if len(texts) == count:
                break
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path, list(texts)


def load() -> dict[str, Any]:
    """The machine's load when a figure was taken (2 shared cores: other people's jobs run too)."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"uptime": uptime, "loadavg": list(os.getloadavg())}


class Builds:
    """Cold-cache builds of one corpus, each into a fresh bank root."""

    def __init__(self, path: Path, texts: list[str], workdir: Path, encoder: Any) -> None:
        self.path, self.texts, self.workdir, self.encoder = path, texts, workdir, encoder
        self.count = 0

    def fresh(self) -> tuple[BankStore, Path]:
        self.count += 1
        root = self.workdir / f"banks-{self.count}"
        return BankStore(root), root / ".embeddings"

    def local(self) -> dict[str, float]:
        store, cache = self.fresh()
        started = time.perf_counter()
        store.build("bench", [self.path], embed=lambda t: self.encoder.encode(t).vectors, encoder_identity=self.encoder.identity,
                    split=False, cache_dir=cache)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "sentences_per_s": len(self.texts) / seconds}

    def distributed(self, app: Any, chunk: int) -> dict[str, float]:
        from tasks.corpus import embed_on_workers

        store, cache = self.fresh()
        started = time.perf_counter()
        report = embed_on_workers(app, self.texts, self.encoder.identity, cache, chunk=chunk, stall_timeout=900)
        embedded = time.perf_counter() - started
        store.build("bench", [self.path], embed=refuse, encoder_identity=self.encoder.identity, split=False, cache_dir=cache)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "sentences_per_s": len(self.texts) / seconds, "embed_seconds": embedded, "chunks": report.chunks}


def refuse(texts: list[str]) -> Any:
    raise RuntimeError(f"{len(texts)} sentences were not cached by the workers")


def warm(app: Any, encoder: Any, workdir: Path, workers: int) -> None:
    """A few tiny chunks, so every encode worker has its model loaded before a timed build."""
    from tasks.corpus import embed_on_workers

    texts = [f"warm-up sentence number {i} of {time.time()}" for i in range(8 * workers)]
    embed_on_workers(app, texts, encoder.identity, workdir / "warm-cache", chunk=4, stall_timeout=600)


def latencies(stack: common.Stack, questions: list[str]) -> list[float]:
    return [common.run_batch(stack, [q]).seconds for q in questions]


def during_build(stack: common.Stack, builds: Builds, chunk: int, questions: list[str]) -> tuple[list[float], dict[str, float]]:
    """Single-question latencies measured one after another while a distributed build runs."""
    result: dict[str, float] = {}
    thread = threading.Thread(target=lambda: result.update(builds.distributed(stack.app, chunk)))
    thread.start()
    time.sleep(2.0)  # the chunks are queued and the workers busy
    seconds = []
    for q in questions:
        if not thread.is_alive():
            break
        seconds.append(common.run_batch(stack, [q]).seconds)
    thread.join()
    return seconds, result


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], questions=20, runs=1)
    common.service_options(p, redis_db=7, backends="sqlite")
    p.add_argument("--sentences", type=int, default=6000, help="unique sentences in the bank (answers of --data)")
    p.add_argument("--chunk", type=int, default=512, help="sentences per task on the embed queue")
    p.add_argument("--latency-only", action="store_true", help="only the question latency, idle and during a build (no throughput set-ups)")
    args = p.parse_args()
    args.micro_batch = 1
    from cubeqa.wiring import encoder_config
    from pipeline.encoder import TeacherEncoder

    workdir = Path(tempfile.mkdtemp(prefix="cubeqa-bench-bank-"))
    path, texts = corpus(args.data, args.sentences, workdir)
    encoder = TeacherEncoder(encoder_config(common.settings()))
    builds = Builds(path, texts, workdir, encoder)
    asked = common.questions(common.VAL, args.questions)
    setups: dict[str, dict[str, Any]] = {}
    latency: dict[str, Any] = {}
    plans = [("default concurrency", "")] if args.latency_only else [("concurrency 1", "--concurrency 1"), ("default concurrency", "")]
    for label, worker_args in plans:
        args.worker_args = worker_args
        with common.job_stack("sqlite", args, warm_up=4) as stack:
            for workers in (1,) if args.latency_only else (1, 2):
                name = f"{workers} encode worker{'s' if workers > 1 else ''}, {label}"
                extra = common.extra_worker(stack, "encode", asked[:4]) if workers == 2 else None
                with extra or nullcontext():
                    warm(stack.app, encoder, workdir, workers)
                    runs = []
                    for _ in range(0 if args.latency_only else args.runs):
                        runs.append({"in_process": builds.local(), "distributed": builds.distributed(stack.app, args.chunk), "load": load()})
                    if runs:
                        setups[name] = {"workers": workers, "worker_args": worker_args, "runs": runs}
                    print(f"{name}: " + ", ".join(f"in-process {r['in_process']['sentences_per_s']:.0f}/s, distributed "
                                                 f"{r['distributed']['sentences_per_s']:.0f}/s" for r in runs), flush=True)
                if workers == 1 and not worker_args:
                    idle = latencies(stack, asked)
                    busy, build = during_build(stack, builds, args.chunk, asked)
                    latency = {"idle_s": common.percentiles(idle, (50, 90)), "during_build_s": common.percentiles(busy, (50, 90)),
                               "idle_n": len(idle), "during_build_n": len(busy), "build": build, "load": load()}

    rows = []
    for name, setup in setups.items():
        local = [r["in_process"]["sentences_per_s"] for r in setup["runs"]]
        remote = [r["distributed"]["sentences_per_s"] for r in setup["runs"]]
        rows.append([name, common.band(common.spread(local), 0), common.band(common.spread(remote), 0),
                     common.band(common.spread([b / a for a, b in zip(local, remote)]), 2)])
    common.table(f"{len(texts)} sentences, chunks of {args.chunk}, cold cache, {args.runs} run(s): sentences/s median [min-max]",
                 ["set-up", "in-process", "distributed", "ratio"], rows)
    if latency:
        print(f"\nsingle-question latency (s), 1 encode worker at default concurrency: idle p50 {latency['idle_s']['p50']:.3f} "
              f"p90 {latency['idle_s']['p90']:.3f} (n={latency['idle_n']}); during a build p50 {latency['during_build_s']['p50']:.3f} "
              f"p90 {latency['during_build_s']['p90']:.3f} (n={latency['during_build_n']})")
    print(f"load: {load()['uptime']}")
    common.write_json(args.json, {"sentences": len(texts), "chunk": args.chunk, "runs": args.runs, "setups": setups, "latency": latency})


if __name__ == "__main__":
    main()
