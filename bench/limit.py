"""The ceiling: the model in one process, `ProductionPipeline.process_batch`, at each batch size.

    .venv/bin/python bench/limit.py [--questions 2000] [--runs 3] [--batch-sizes 64,256,2000] [--threads 1,2] [--json PATH]

Prints questions/s of the whole pipeline per batch size and intra-op thread count (median [min-max]
over runs), the best of them, and each stage alone there (the encoder alone is the issue's second figure). The
pipeline is built from the same CUBEQA_* settings the workers read (CUBEQA_THREADS, ...).
"""

from __future__ import annotations

import statistics

import common


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="64,256,2000", help="comma-separated batch sizes to try")
    p.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts to try")
    args = p.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    threads = common.thread_counts(args.threads)
    texts = common.questions(args.data, args.questions)
    pipe = common.in_process(common.settings())
    pipe.process_batch(texts[:256])  # warm-up: first calls allocate

    grid = [(size, count) for count in threads for size in sizes]
    per_config: dict[tuple[int, int], list[float]] = {config: [] for config in grid}
    for _ in range(args.runs):
        for size, count in grid:  # interleaved, so drift hits every configuration alike
            common.use_threads(count)
            per_config[(size, count)].append(common.timed_qps(pipe.process_batch, texts, size))
    pipeline = {f"batch {size}, {count} threads": common.spread(values) for (size, count), values in per_config.items()}
    best_size, best_threads = max(grid, key=lambda config: statistics.median(per_config[config]))
    best = f"batch {best_size}, {best_threads} threads"
    common.use_threads(best_threads)

    vectors = pipe.encode(texts).vectors
    answers = pipe.map(vectors)
    stage_runs: dict[str, list[float]] = {"encode": [], "cube": [], "decode": []}
    for _ in range(args.runs):
        stage_runs["encode"].append(common.timed_qps(pipe.encode, texts, best_size))
        stage_runs["cube"].append(common.timed_qps(pipe.map, vectors, best_size))
        stage_runs["decode"].append(common.timed_qps(pipe.decode, answers, best_size))
    stages = {name: common.spread(values) for name, values in stage_runs.items()}

    common.table(
        f"in-process ProductionPipeline.process_batch, {len(texts)} questions, {args.runs} runs (questions/s)",
        ["configuration", "median", "min", "max"],
        [[name, f["median"], f["min"], f["max"]] for name, f in pipeline.items()],
    )
    common.table(
        f"each stage alone at {best} (questions/s)",
        ["stage", "median", "min", "max", "ms per question"],
        [[name, f["median"], f["min"], f["max"], 1000 / f["median"]] for name, f in stages.items()],
    )
    print(f"\nlimit: {common.band(pipeline[best])} questions/s at {best}; encoder alone {common.band(stages['encode'])}")
    common.write_json(
        args.json,
        {
            "questions": len(texts),
            "runs": args.runs,
            "best_batch_size": best_size,
            "best_threads": best_threads,
            "limit_qps": pipeline[best],
            "encoder_qps": stages["encode"],
            "by_configuration": pipeline,
            "stages_qps": stages,
        },
    )


if __name__ == "__main__":
    main()
