"""The job system against its own ceiling: N questions through Redis and one worker per stage,
on SQLite and PostgreSQL, each run paired with an in-process limit run measured just before it.

    .venv/bin/python bench/distributed.py [--questions 2000] [--runs 3] [--backends sqlite,postgresql]
        [--broker redis://127.0.0.1:6379/5] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432]
        [--limit-batch-sizes 256,2000] [--limit-threads 1,2] [--limit-encode-batch-sizes 16,64] [--json PATH]

Distributed throughput runs from the first `submit` call (jobs written to SQL, chains sent) to
the last result written; the ratio of each run is taken against the limit run next to it, so
the drift of a shared machine hits both sides alike. The limit of a run is the best in-process
throughput over the given batch sizes, intra-op thread counts and encoder sub-batch sizes.
"""

from __future__ import annotations

import statistics

import common


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    common.service_options(p, redis_db=5)
    p.add_argument("--limit-batch-sizes", default="256,2000", help="in-process batch sizes; each run's limit is the best of them")
    p.add_argument("--limit-threads", default="1,2", help="in-process intra-op thread counts the limit is the best of")
    p.add_argument("--limit-encode-batch-sizes", default="16,64", help="in-process encoder sub-batch sizes the limit is the best of")
    args = p.parse_args()
    sizes = common.sizes(args.limit_batch_sizes)
    threads = common.thread_counts(args.limit_threads)
    encode_batches = common.sizes(args.limit_encode_batch_sizes)
    texts = common.questions(args.data, args.questions)
    pipe = common.in_process(common.settings(), rerank=args.rerank)
    pipe.process_batch(texts[:256])

    results: dict[str, dict] = {}
    for backend in common.backends(args.backends):
        limits: list[float] = []
        runs: list[common.BatchRun] = []
        with common.job_stack(backend, args) as stack:
            cpu_ms: dict[str, list[float]] = {}
            for _ in range(args.runs):
                limits.append(common.limit_qps(pipe, texts, sizes, threads, encode_batches)[0])
                before = common.stage_cpu(stack)
                runs.append(common.run_batch(stack, texts))
                for stage, seconds in common.stage_cpu(stack).items():
                    cpu_ms.setdefault(stage, []).append(1000 * (seconds - before[stage]) / len(texts))
            timings = common.stage_timings(stack, runs[-1].batch_ids)
        ratios = [run.qps / limit for run, limit in zip(runs, limits)]
        results[backend] = {
            "micro_batch": stack.micro_batch,
            "submitted": len(texts),
            "done": [run.done for run in runs],
            "failed": [run.failed for run in runs],
            "distributed_qps": common.spread([run.qps for run in runs]),
            "limit_qps": common.spread(limits),
            "ratio": common.spread(ratios),
            "worker_cpu_ms_per_question": {stage: common.spread(values) for stage, values in cpu_ms.items()},
            "stage_ms_per_question": {
                key: statistics.fmean(t[key] for t in timings if key in t) for key in sorted({k for t in timings for k in t})
            },
        }

    common.table(
        f"{len(texts)} questions, one worker per stage, {args.runs} runs: median [min-max]",
        ["store", "micro-batch", "distributed q/s", "limit q/s", "ratio"],
        [
            [backend, r["micro_batch"], common.band(r["distributed_qps"]), common.band(r["limit_qps"]), common.band(r["ratio"], 3)]
            for backend, r in results.items()
        ],
    )
    for backend, r in results.items():
        print(f"{backend}: per question (ms, last run) " + ", ".join(f"{k} {v:.2f}" for k, v in r["stage_ms_per_question"].items()))
        print(f"{backend}: worker CPU per question (ms, median) " + ", ".join(f"{k} {v['median']:.2f}" for k, v in r["worker_cpu_ms_per_question"].items()))
    common.write_json(args.json, {"questions": len(texts), "runs": args.runs, "limit_batch_sizes": sizes, "limit_threads": threads, "limit_encode_batch_sizes": encode_batches, "backends": results})


if __name__ == "__main__":
    main()
