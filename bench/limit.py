"""The ceiling: the model in one process, `ProductionPipeline.process_batch`, at each batch size.

    .venv/bin/python bench/limit.py [--questions 2000] [--runs 3] [--batch-sizes 64,256,2000] [--threads 1,2]
        [--encode-batch-sizes 16,32,64] [--json PATH]

Prints questions/s of the whole pipeline per batch size, intra-op thread count and encoder sub-batch size (median [min-max]
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
    p.add_argument("--encode-batch-sizes", default="16,32,64", help="comma-separated encoder sub-batch sizes (texts per forward pass) to try")
    args = p.parse_args()
    sizes = common.sizes(args.batch_sizes)
    threads = common.thread_counts(args.threads)
    encode_batches = common.sizes(args.encode_batch_sizes)
    texts = common.questions(args.data, args.questions)
    pipe = common.in_process(common.settings())
    pipe.process_batch(texts[:256])  # warm-up: first calls allocate

    grid = [(size, count, encode_batch) for count in threads for encode_batch in encode_batches for size in sizes]
    per_config: dict[tuple[int, int, int], list[float]] = {config: [] for config in grid}
    for _ in range(args.runs):
        for size, count, encode_batch in grid:  # interleaved, so drift hits every configuration alike
            common.use_threads(count)
            common.use_encode_batch(pipe, encode_batch)
            per_config[(size, count, encode_batch)].append(common.timed_qps(pipe.process_batch, texts, size))

    def name(config: tuple[int, int, int]) -> str:
        return f"batch {config[0]}, {config[1]} threads, encoder batch {config[2]}"

    pipeline = {name(config): common.spread(values) for config, values in per_config.items()}
    best_config = max(grid, key=lambda config: statistics.median(per_config[config]))
    best_size, best_threads, best_encode_batch = best_config
    best = name(best_config)
    common.use_threads(best_threads)
    common.use_encode_batch(pipe, best_encode_batch)

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
            "best_encode_batch_size": best_encode_batch,
            "limit_qps": pipeline[best],
            "encoder_qps": stages["encode"],
            "by_configuration": pipeline,
            "stages_qps": stages,
        },
    )


if __name__ == "__main__":
    main()
