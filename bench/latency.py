"""Single-job latency through the queue: one job at a time, end to end and per stage.

    .venv/bin/python bench/latency.py [--questions 200] [--runs 3] [--backends sqlite,postgresql] [--json PATH]

Each job is submitted alone (`tasks.producer.submit`, one job) and the next only after its
result is in SQL. Per job, from the bench clock, the worker stamps in the stored `timings_ms`
and the job row's `finished_at`:

    end to end   = result seen in SQL - start of submit        (polled every 2 ms)
    submit       = the producer call: batch + job rows written, chain sent, dispatch recorded
    queue wait   = wait_encode + wait_cube + wait_decode (+ wait_rerank): hand-over to task start (Redis hop,
                   message decoding, a free worker)
    compute      = encode + cube + decode (+ rerank) task bodies (encode includes marking the job running in SQL)
    --rerank     = the job goes through the rerank stage too (retrieval in decode, reranking and the write in rerank)
    SQL write    = result seen - result transaction started (record_outcomes, commit, <= 2 ms poll)
    serialization: msgpack dumps+loads of each hop's message, measured apart (it is inside queue wait)

Percentiles pool the jobs of all runs; each run's p50/p95/p99 is also given (median [min-max]).
"""

from __future__ import annotations

import time
from typing import Any

import common

PARTS = ("submit", "wait_encode", "encode", "wait_cube", "cube", "wait_decode", "decode", "wait_rerank", "rerank", "sql_write")


def one_job(stack: common.Stack, text: str, poll: float = 0.002) -> dict[str, float]:
    """Submits one job, waits for its result; returns its timeline (ms)."""
    from sqlalchemy import select

    from storage.models import Job
    from storage.summary import as_utc
    from tasks.producer import submit

    started = time.time()
    batch_id = submit(stack.sessions, common.new_jobs([text]), micro_batch=stack.micro_batch, source="bench-latency",
                      pin=stack.pin).batch_id
    submitted = time.time()
    deadline = time.monotonic() + 120
    while True:
        with stack.sessions() as session:
            row = session.execute(select(Job.status, Job.finished_at, Job.timings_ms).where(Job.batch_id == batch_id)).one()
        if row.status in ("done", "failed"):
            seen = time.time()
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"job of batch {batch_id} not finished; worker logs in {stack.logdir}")
        time.sleep(poll)
    if row.status != "done":
        raise RuntimeError(f"job failed: batch {batch_id}")
    timings = row.timings_ms or {}
    out = {
        "end_to_end": 1000 * (seen - started),
        "submit": 1000 * (submitted - started),
        "sql_write": 1000 * (seen - as_utc(row.finished_at).timestamp()),
    }
    out.update({key: float(timings.get(key, 0.0)) for key in PARTS if key not in out})
    out["queue_wait"] = out["wait_encode"] + out["wait_cube"] + out["wait_decode"] + out["wait_rerank"]
    out["compute"] = out["encode"] + out["cube"] + out["decode"] + out["rerank"]
    return out


def serialization_ms(dim: int = 384, jobs: int = 1, repeats: int = 2000) -> dict[str, float]:
    """msgpack dumps+loads of the message each hop carries, for `jobs` jobs (ms per message)."""
    import numpy as np
    from kombu.serialization import dumps, loads

    from tasks.wire import MicroBatch, pack

    vectors = pack(np.random.default_rng(0).standard_normal((jobs, dim)).astype(np.float32))
    ids = [f"{i:032x}" for i in range(jobs)]
    to_encode = MicroBatch(batch="0" * 32, jobs=ids, texts=["What is kenya a founding member of?"] * jobs, refs=[None] * jobs).to_wire()
    to_cube = {**to_encode, "texts": [], "refs": [], "dim": dim, "q": vectors, "truncated": [False] * jobs, "has_ref": [False] * jobs}
    to_decode = {**to_cube, "a": vectors}
    out = {}
    for hop, payload in (("to_encode", to_encode), ("to_cube", to_cube), ("to_decode", to_decode)):
        started = time.perf_counter()
        for _ in range(repeats):
            content_type, encoding, body = dumps(((payload,), {}, {}), serializer="msgpack")
            loads(body, content_type, encoding, accept=["application/x-msgpack"])
        out[hop] = 1000 * (time.perf_counter() - started) / repeats
    out["total"] = sum(out.values())
    return out


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], questions=200)
    common.service_options(p, redis_db=6)
    args = p.parse_args()
    texts = common.questions(args.data, args.questions)
    results: dict[str, Any] = {}
    for backend in common.backends(args.backends):
        with common.job_stack(backend, args, warm_up=0) as stack:
            for text in texts[:5]:
                one_job(stack, text)  # models loaded, connections open
            runs = [[one_job(stack, text) for text in texts] for _ in range(args.runs)]
        pooled = [job for run in runs for job in run]
        keys = ("end_to_end", *PARTS, "queue_wait", "compute")
        results[backend] = {
            "jobs": len(pooled),
            "per_run_end_to_end": {q: common.spread([common.percentiles([j["end_to_end"] for j in run])[q] for run in runs]) for q in ("p50", "p95", "p99")},
            "ms": {key: common.percentiles([job[key] for job in pooled]) for key in keys},
        }
    serial = {"1_job": serialization_ms(jobs=1), "32_jobs": serialization_ms(jobs=32, repeats=500)}

    for backend, r in results.items():
        common.table(
            f"{backend}: {r['jobs']} jobs one at a time ({args.runs} runs of {len(texts)}), ms",
            ["part", "p50", "p95", "p99", "mean"],
            [[key, *(r["ms"][key][q] for q in ("p50", "p95", "p99", "mean"))] for key in r["ms"]],
        )
        print("end to end per run: " + ", ".join(f"{q} {common.band(f)}" for q, f in r["per_run_end_to_end"].items()))
    print("serialization (msgpack dumps+loads per message, ms): " + "; ".join(f"{n}: " + ", ".join(f"{k} {v:.3f}" for k, v in s.items()) for n, s in serial.items()))
    common.write_json(args.json, {"questions": len(texts), "runs": args.runs, "backends": results, "serialization_ms": serial})


if __name__ == "__main__":
    main()
