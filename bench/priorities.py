"""Priorities and fair share (tasks/priority.py), measured against first come, first served on the same stack.

    .venv/bin/python bench/priorities.py [--bulk 10000] [--every 0.5] [--pair 5000] [--gap 10] [--json PATH]

For each schedule (fair, fifo), on one stack of real `cubeqa worker` processes (SQLite store):

    single jobs  = a bulk batch of --bulk questions is submitted (all its micro-batches are sent); then, until it has
                   finished, a single question every --every s, submitted as the API's POST /v1/jobs submits it
                   (`submit(interactive=True)`, in this process, without the HTTP round trip); its latency is from
                   the submit call to the job's finished_at in SQL. p50 and p95 over the singles; the bulk batch's
                   time beside them.
    two batches  = two batches of --pair questions each, the second submitted --gap s after the first; each one's
                   finishing time (its last job's finished_at) from the first submit, and their spread:
                   (later - earlier) / later. Served one after the other the spread is about half; shared, near 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import common


def in_process(stack: common.Stack, schedule: Any) -> Callable[[str], str]:
    """Sends one question as POST /v1/jobs does, in this process; returns its job id."""
    from tasks.producer import submit

    return lambda question: submit(stack.sessions, common.new_jobs([question]), micro_batch=1, source="api:job", pin=stack.pin,
                                   interactive=True, schedule=schedule).job_ids[0]


def latency_run(stack: common.Stack, texts: list[str], schedule: Any, every: float, send: Callable[[str], str]) -> dict[str, Any]:
    """Single jobs sent by `send` every `every` s while a bulk batch runs: their latencies, and the bulk batch's time."""
    from tasks.producer import submit

    started = time.time()
    bulk = submit(stack.sessions, common.new_jobs(texts), micro_batch=stack.micro_batch, source="bench bulk", pin=stack.pin,
                  schedule=schedule).batch_id
    asked: list[tuple[float, str]] = []
    while not batch_finished(stack, bulk):
        one = texts[(len(asked) * 7919) % len(texts)]
        sent = time.time()
        asked.append((sent, send(one)))
        time.sleep(max(0.0, sent + every - time.time()))
    run = common.collect(stack, (bulk,), started, timeout=3600)
    seconds = [finished_at(stack, job_id, timeout=3600) - sent for sent, job_id in asked]
    return {"singles": common.percentiles(seconds), "single_seconds": seconds, "bulk_seconds": run.seconds,
            "bulk_done": run.done, "bulk_jobs": run.jobs}


def through_api(stack: common.Stack, texts: list[str], every: float) -> dict[str, Any]:
    """The fair latency run with the singles sent to a running `cubeqa api` (POST /v1/jobs?wait=0)."""
    from ask_api import serve_api

    from cubeqa.client import Client
    from tasks.priority import Schedule

    api, base = serve_api(stack.env, stack.logdir)
    try:
        with Client(base) as client:
            client.ask(texts[0])  # the API's first request opens its connections
            return latency_run(stack, texts, Schedule.FAIR, every, lambda question: client.ask(question, wait=0).id)
    finally:
        api.terminate()
        api.wait(30)


def batch_finished(stack: common.Stack, batch_id: str) -> bool:
    from storage.models import Batch

    with stack.sessions() as session:
        return session.get(Batch, batch_id).finished_at is not None


def finished_at(stack: common.Stack, job_id: str, timeout: float) -> float:
    """The job's finished_at (epoch seconds) once it is final."""
    from storage.models import Job
    from storage.summary import as_utc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stack.sessions() as session:
            job = session.get(Job, job_id)
            if job is not None and job.finished_at is not None:
                return as_utc(job.finished_at).timestamp()
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} not final after {timeout} s; worker logs in {stack.logdir}")


def pair_run(stack: common.Stack, texts: list[str], schedule: Any, gap: float) -> dict[str, Any]:
    """Two equal batches, the second `gap` s after the first: each one's finishing time from the first submit."""
    from tasks.producer import submit

    started = time.time()
    first = submit(stack.sessions, common.new_jobs(texts), micro_batch=stack.micro_batch, source="bench a", pin=stack.pin,
                   schedule=schedule).batch_id
    time.sleep(max(0.0, started + gap - time.time()))
    second = submit(stack.sessions, common.new_jobs(texts), micro_batch=stack.micro_batch, source="bench b", pin=stack.pin,
                    schedule=schedule).batch_id
    a = common.collect(stack, (first,), started, timeout=3600).seconds
    b = common.collect(stack, (second,), started, timeout=3600).seconds
    return {"first_finished": a, "second_finished": b, "spread": abs(b - a) / max(a, b)}


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], questions=10000, runs=1)
    common.service_options(p, redis_db=6, backends="sqlite")
    p.add_argument("--bulk", type=int, default=10000, help="questions of the bulk batch the singles run beside")
    p.add_argument("--every", type=float, default=0.5, help="seconds between single questions while the bulk batch runs")
    p.add_argument("--pair", type=int, default=5000, help="questions of each of the two batches")
    p.add_argument("--gap", type=float, default=10.0, help="seconds between the two batches' submissions")
    p.add_argument("--schedules", default="fair,fifo", help="comma-separated: fair, fifo")
    p.add_argument("--api", action="store_true", help="also a fair run whose singles go through a `cubeqa api` (Client.ask, wait=0)")
    args = p.parse_args()
    from tasks.priority import Schedule

    schedules = [Schedule(s.strip()) for s in args.schedules.split(",") if s.strip()]
    bulk = common.questions(args.data, args.bulk)
    pair = common.questions(args.data, args.pair)
    figures: dict[str, Any] = {"bulk": args.bulk, "every": args.every, "pair": args.pair, "gap": args.gap, "runs": {}}
    with common.job_stack("sqlite", args) as stack:
        for schedule in schedules:
            print(f"{schedule}: a single question every {args.every} s beside {args.bulk} bulk questions ...", flush=True)
            latency = latency_run(stack, bulk, schedule, args.every, in_process(stack, schedule))
            print(f"{schedule}: two batches of {args.pair}, {args.gap:.0f} s apart ...", flush=True)
            figures["runs"][str(schedule)] = {"latency": latency, "pair": pair_run(stack, pair, schedule, args.gap)}
        if args.api:
            print(f"fair, through the API: a single question every {args.every} s beside {args.bulk} bulk questions ...", flush=True)
            figures["runs"]["fair, through the API"] = {"latency": through_api(stack, bulk, args.every)}
    rows = []
    for name, run in figures["runs"].items():
        s, pr = run["latency"]["singles"], run.get("pair")
        pair_cells = [pr["first_finished"], pr["second_finished"], f"{pr['spread']:.0%}"] if pr else ["-", "-", "-"]
        rows.append([name, len(run["latency"]["single_seconds"]), s["p50"], s["p95"], max(run["latency"]["single_seconds"]),
                     run["latency"]["bulk_seconds"], *pair_cells])
    common.table(f"Single jobs beside a {args.bulk}-question batch; two {args.pair}-question batches {args.gap:.0f} s apart (seconds)",
                 ["schedule", "singles", "single p50", "single p95", "single max", "bulk batch", "first batch done", "second batch done", "spread"],
                 rows)
    common.write_json(args.json, figures)


if __name__ == "__main__":
    main()
