"""Shared parts of the performance benchmarks (limit, distributed, latency, memory, scaling).

Each script builds what a user's run builds: the in-process `ProductionPipeline` from the same
settings the workers read, real `cubeqa worker` subprocesses (the demo's runner and readiness
wait), and submissions through the real producer (`tasks.producer.submit`). Figures are medians of
several runs with their min and max; ratios are taken within one run of a script, because absolute
times on a shared machine drift.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.scratch import scratch_database

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "squad_sent_train.jsonl"
VAL = ROOT / "data" / "squad_sent_val.jsonl"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
BACKENDS = ("sqlite", "postgresql")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# ---------------------------------------------------------------- arguments, figures, output


def parser(description: str, *, questions: int = 2000, runs: int = 3) -> argparse.ArgumentParser:
    """The options every bench script shares."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--questions", type=int, default=questions, help="questions per run (first N of --data)")
    p.add_argument("--runs", type=int, default=runs, help="timed runs; figures are their median, min and max")
    p.add_argument("--data", type=Path, default=DATA, help="Q→A JSONL file the questions come from")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON to this path")
    return p


def service_options(p: argparse.ArgumentParser, *, redis_db: int, backends: str = "sqlite,postgresql") -> None:
    """Options of the scripts that run the job system (each script has its own default Redis database)."""
    p.add_argument("--broker", default=f"{DEFAULT_REDIS}/{redis_db}", help="Redis database URL the bench may empty (FLUSHDB)")
    p.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server URL; the bench creates and drops its own database")
    p.add_argument("--backends", default=backends, help="comma-separated SQL stores to run on: sqlite, postgresql")
    p.add_argument("--micro-batch", type=int, default=None, help="jobs per chain (default: CUBEQA_MICRO_BATCH)")
    p.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE", help="a variable for the workers only (repeatable)")
    p.add_argument("--worker-args", default="", help='extra `cubeqa worker` options for every stage, e.g. "--pool prefork --concurrency 1"')
    p.add_argument("--rerank", action="store_true", help="jobs (and the in-process reference) go through the rerank stage")


def backends(value: str) -> list[str]:
    chosen = [b.strip() for b in value.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BACKENDS))
    if unknown:
        raise SystemExit(f"unknown backend(s) {', '.join(unknown)}: use {', '.join(BACKENDS)}")
    return chosen


def questions(path: Path, count: int) -> list[str]:
    """The first `count` questions of a Q→A JSONL file (repeated from the top if it is shorter)."""
    lines = [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [lines[i % len(lines)] for i in range(count)]


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of a figure over runs, with every run's value."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """Linear-interpolated percentiles (p50, p95, p99 by default) and the mean of a sample."""
    ordered = sorted(values)
    out: dict[str, float] = {}
    for q in qs:
        position = (len(ordered) - 1) * q / 100
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        out[f"p{q}"] = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    out["mean"] = statistics.fmean(ordered)
    return out


def machine() -> dict[str, Any]:
    """What the figures ran on, from which commit and command (see cubeqa.provenance)."""
    from cubeqa.provenance import run_record

    return run_record(Path(sys.argv[0]).as_posix(), sys.argv[1:])


def decoding_options(text: str) -> dict[str, object]:
    """Decoding options from text: "beam=3,rerank=true,min_length=0.9" becomes {"beam": 3, "rerank": True, "min_length": 0.9}."""
    from pipeline import GenerativeConfig

    options: dict[str, object] = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        options[name.strip()] = json.loads(value.strip().lower())
    try:
        GenerativeConfig.check_options(options)
    except ValueError as exc:
        raise SystemExit(f"{exc} (in {text!r})") from None
    return options


def same_share(texts: Sequence[str], others: Sequence[str]) -> float:
    """The share of positions where two runs produced the same text."""
    return sum(a == b for a, b in zip(texts, others, strict=True)) / max(1, len(texts))


def write_json(path: Path | None, figures: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **figures}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Prints a plain aligned table (readable in CI logs)."""
    cells = [[str(c) for c in columns]] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def band(figure: dict[str, Any], digits: int = 1) -> str:
    """'median [min-max]' of a spread."""
    return f"{figure['median']:.{digits}f} [{figure['min']:.{digits}f}-{figure['max']:.{digits}f}]"


# ---------------------------------------------------------------- the in-process limit


def settings():  # cubeqa.settings.Settings
    """Settings from CUBEQA_* variables, as every cubeqa command reads them."""
    from cubeqa.settings import Settings

    return Settings()


def in_process(settings, rerank: bool = False) -> Any:
    """The ProductionPipeline `cubeqa ask` builds, from the same settings the workers read (with the rerank stage when
    `rerank`)."""
    from cubeqa.cli import build_encoder_config
    from cubeqa.wiring import bank_config, generative_options
    from pipeline import ProductionPipeline

    return ProductionPipeline.from_bundle(
        settings.bundle_dir, encoder_config=build_encoder_config(settings), bank_config=bank_config(settings),
        cache_dir=settings.cache_dir, top_k=settings.top_k, decoder=settings.decoder, generative_options=generative_options(settings),
        runtime=settings.runtime, threads=settings.threads, rerank=rerank,
    )


def timed_qps(fn: Callable[[list[Any]], Any], items: list[Any], batch: int) -> float:
    """Items per second of `fn` called on consecutive chunks of `batch` items."""
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        fn(items[start : start + batch])
    return len(items) / (time.perf_counter() - started)


def limit_qps(pipe, texts: list[str], batch_sizes: Sequence[int], threads: Sequence[int], encode_batches: Sequence[int]) -> tuple[float, int, int, int]:
    """Best in-process `process_batch` throughput over call batch sizes, intra-op thread counts and encoder
    sub-batch sizes (questions/s), with the batch size, thread count and encoder sub-batch that gave it."""
    best = (0.0, 0, 0, 0)
    for count in threads:
        use_threads(count)
        for encode_batch in encode_batches:
            use_encode_batch(pipe, encode_batch)
            best = max([best, *((timed_qps(pipe.process_batch, texts, size), size, count, encode_batch) for size in batch_sizes)])
    return best


def use_encode_batch(pipe, size: int) -> None:
    """Texts per encoder forward pass in this process's pipeline (CUBEQA_ENCODE_BATCH_SIZE for a run)."""
    from dataclasses import replace

    encoder = pipe.encode_stage.encoder
    encoder.config = replace(encoder.config, batch_size=size)


def use_threads(count: int) -> None:
    """Intra-op threads of this process's model (torch and FAISS)."""
    from pipeline import set_threads

    set_threads(count)


def thread_counts(value: str) -> list[int]:
    """Intra-op thread counts from a comma-separated list; empty means one per core."""
    return sizes(value) if value else [os.cpu_count() or 1]


def sizes(value: str) -> list[int]:
    """A comma-separated list of positive integers."""
    return [int(s) for s in value.split(",") if s.strip()]


# ---------------------------------------------------------------- the job system


@dataclass
class Stack:
    """Redis, a SQL store and `cubeqa worker` subprocesses, ready to consume."""

    backend: str
    broker_url: str
    database_url: str
    sessions: Any
    processes: list[subprocess.Popen]
    logdir: Path
    micro_batch: int
    env: dict[str, str]  # the workers' environment
    app: Any  # the configured Celery app
    worker_args: list[str]  # extra `cubeqa worker` options (--worker-args)
    pin: Any = None  # storage.repository.Pin every submission carries (--rerank)


@dataclass(frozen=True)
class BatchRun:
    batch_ids: tuple[str, ...]
    jobs: int
    done: int
    failed: int
    seconds: float  # first submit call to the last job's result

    @property
    def qps(self) -> float:
        return self.jobs / self.seconds


def flush(broker_url: str) -> None:
    import redis

    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    client.close()


@contextmanager
def job_stack(backend: str, args: argparse.Namespace, warm_up: int = 64) -> Iterator[Stack]:
    """Empties the Redis database, creates the store, starts one `cubeqa worker` per stage (the demo's runner),
    waits until each answers, and sends a warm-up batch through; stops everything on exit."""
    from cubeqa import supervise
    from storage.db import make_engine, session_factory, upgrade
    from tasks.app import configure

    config = settings()
    micro_batch = args.micro_batch or config.micro_batch
    with ExitStack() as stack:
        logdir = Path(tempfile.mkdtemp(prefix=f"cubeqa-bench-{backend}-"))
        url = f"sqlite:///{logdir / 'bench.db'}" if backend == "sqlite" else stack.enter_context(scratch_database(args.postgres, prefix="cubeqa_bench"))
        upgrade(url)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        flush(args.broker)
        app = configure(args.broker, task_time_limit=config.task_time_limit, visibility_timeout=config.visibility_timeout)
        env = {**os.environ, "CUBEQA_BROKER_URL": args.broker, "CUBEQA_DATABASE_URL": url, "HF_HUB_OFFLINE": "1"}
        env.update(item.split("=", 1) for item in args.worker_env)
        worker_args = args.worker_args.split()
        processes = stack.enter_context(supervise.stage_workers(env, logdir, worker_args))
        supervise.wait_for_workers(app, processes, logdir)
        from storage.repository import Pin

        result = Stack(backend, args.broker, url, session_factory(engine), processes, logdir, micro_batch, env, app, worker_args,
                       Pin(rerank=getattr(args, "rerank", False)))
        if warm_up:
            run_batch(result, questions(args.data, min(warm_up, args.questions)))  # the first tasks wait for each model to load
        yield result


@contextmanager
def extra_worker(stack: Stack, stage: str, warm_up: Sequence[str]) -> Iterator[subprocess.Popen]:
    """One more `cubeqa worker` process on `stage`, started beside the stack's, ready when both answer a ping
    and a warm-up batch of several chains (which both take from the queue) has gone through."""
    from cubeqa import supervise

    with (stack.logdir / f"worker-{stage}-2.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cubeqa", "worker", "--stage", stage, "--loglevel", "WARNING", *stack.worker_args],
            env=stack.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + supervise.READY_TIMEOUT
        while len([n for reply in stack.app.control.ping(timeout=1.0) or [] for n in reply if n.startswith(f"{stage}-")]) < 2:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the extra {stage} worker did not start; log in {stack.logdir}")
        run_batch(stack, warm_up)
        yield process
    finally:
        supervise.stop_all([process], grace=20)


def new_jobs(texts: Sequence[str]) -> list[Any]:
    from storage.repository import NewJob

    return [NewJob(question=text, line=i + 1) for i, text in enumerate(texts)]


def run_batch(stack: Stack, texts: Sequence[str], *, producers: int = 1, timeout: float = 900) -> BatchRun:
    """Submits `texts` through the real producer (split over `producers` processes) and waits for every result."""
    if producers == 1:
        from tasks.producer import submit

        started = time.time()
        batch_ids: tuple[str, ...] = (
            submit(stack.sessions, new_jobs(texts), micro_batch=stack.micro_batch, source="bench", pin=stack.pin).batch_id,
        )
    else:
        started, batch_ids = parallel_submit(stack, texts, producers)
    return collect(stack, batch_ids, started, timeout)


def collect(stack: Stack, batch_ids: Sequence[str], started: float, timeout: float, poll: float = 0.05) -> BatchRun:
    """Waits until every job of the batches is final; the run ends at the last batch's finishing time (in SQL)."""
    from sqlalchemy import select

    from storage.models import Batch
    from storage.summary import as_utc

    deadline = time.monotonic() + timeout
    while True:
        with stack.sessions() as session:
            rows = session.execute(select(Batch.total, Batch.done_count, Batch.failed_count, Batch.finished_at).where(Batch.id.in_(batch_ids))).all()
        if len(rows) == len(batch_ids) and all(r.finished_at is not None for r in rows):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"batches not finished after {timeout} s: {rows}; worker logs in {stack.logdir}")
        time.sleep(poll)
    finished = max(as_utc(r.finished_at).timestamp() for r in rows)
    return BatchRun(
        tuple(batch_ids), sum(r.total for r in rows), sum(r.done_count for r in rows), sum(r.failed_count for r in rows), finished - started
    )


def produce(broker_url: str, database_url: str, texts: list[str], micro_batch: int, go: Any, out: Any, pin: Any) -> None:
    """A producer process: connects, waits for the common start signal, submits its share."""
    from storage.db import make_engine, session_factory
    from tasks.app import configure
    from tasks.producer import submit

    config = settings()
    configure(broker_url, task_time_limit=config.task_time_limit, visibility_timeout=config.visibility_timeout)
    sessions = session_factory(make_engine(database_url))
    out.put("ready")
    go.wait()
    out.put(submit(sessions, new_jobs(texts), micro_batch=micro_batch, source="bench", pin=pin).batch_id)


def parallel_submit(stack: Stack, texts: Sequence[str], producers: int) -> tuple[float, tuple[str, ...]]:
    """The submission split evenly over `producers` processes started together; returns (start time, batch ids)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    go, out = context.Event(), context.Queue()
    share = -(-len(texts) // producers)
    workers = [
        context.Process(target=produce, args=(stack.broker_url, stack.database_url, list(texts[i * share : (i + 1) * share]), stack.micro_batch, go, out, stack.pin))
        for i in range(producers)
    ]
    for process in workers:
        process.start()
    for _ in workers:
        out.get(timeout=120)
    started = time.time()
    go.set()
    batch_ids = tuple(out.get(timeout=600) for _ in workers)
    for process in workers:
        process.join(60)
    return started, batch_ids


def stage_timings(stack: Stack, batch_ids: Sequence[str]) -> list[dict[str, float]]:
    """Every finished job's per-stage timings (compute per item and queue waits, ms)."""
    from sqlalchemy import select

    from storage.models import Job

    with stack.sessions() as session:
        return [t for t in session.scalars(select(Job.timings_ms).where(Job.batch_id.in_(batch_ids), Job.status == "done")) if t]


# ---------------------------------------------------------------- memory of worker processes


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc)."""
    found = [pid]
    for current in found:
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its descendants so far (Linux /proc), seconds."""
    total = 0
    for current in process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def stage_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each stage's worker process tree."""
    from cubeqa.supervise import worker_stage

    return {worker_stage(process): cpu_seconds(process.pid) for process in stack.processes}


def memory_of(pid: int) -> dict[str, float]:
    """Peak (VmHWM) and current (VmRSS) resident memory of one process, and its current PSS
    (shared pages divided among the processes sharing them), MB."""
    fields = {}
    for path in (Path(f"/proc/{pid}/status"), Path(f"/proc/{pid}/smaps_rollup")):
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS", "Pss") and value.split():
                fields[name] = int(value.split()[0]) / 1024
    return {"peak_mb": fields.get("VmHWM", 0.0), "rss_mb": fields.get("VmRSS", 0.0), "pss_mb": fields.get("Pss", 0.0)}
