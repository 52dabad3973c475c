"""The ceiling: the model in one process, `ProductionPipeline.process_batch`, at each batch size.

    .venv/bin/python bench/limit.py [--questions 2000] [--runs 3] [--batch-sizes 32,64,128,256,512] [--json PATH]

Prints questions/s of the whole pipeline per batch size (median [min-max] over runs), the best
size, and each stage alone at that size (the encoder alone is the issue's second figure). The
pipeline is built from the same CUBEQA_* settings the workers read (CUBEQA_THREADS, ...).
"""

from __future__ import annotations

import common


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="32,64,128,256,512", help="comma-separated batch sizes to try")
    args = p.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    texts = common.questions(args.data, args.questions)
    pipe = common.in_process(common.settings())
    pipe.process_batch(texts[: max(sizes)])  # warm-up: first calls allocate

    per_size: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(args.runs):
        for size in sizes:  # interleaved, so drift hits every size alike
            per_size[size].append(common.timed_qps(pipe.process_batch, texts, size))
    pipeline = {str(size): common.spread(values) for size, values in per_size.items()}
    best = max(sizes, key=lambda size: pipeline[str(size)]["median"])

    vectors = pipe.encode(texts).vectors
    answers = pipe.map(vectors)
    stage_runs: dict[str, list[float]] = {"encode": [], "cube": [], "decode": []}
    for _ in range(args.runs):
        stage_runs["encode"].append(common.timed_qps(pipe.encode, texts, best))
        stage_runs["cube"].append(common.timed_qps(pipe.map, vectors, best))
        stage_runs["decode"].append(common.timed_qps(pipe.decode, answers, best))
    stages = {name: common.spread(values) for name, values in stage_runs.items()}

    common.table(
        f"in-process ProductionPipeline.process_batch, {len(texts)} questions, {args.runs} runs (questions/s)",
        ["batch size", "median", "min", "max"],
        [[size, f["median"], f["min"], f["max"]] for size, f in ((s, pipeline[str(s)]) for s in sizes)],
    )
    common.table(
        f"each stage alone at batch size {best} (questions/s)",
        ["stage", "median", "min", "max", "ms per question"],
        [[name, f["median"], f["min"], f["max"], 1000 / f["median"]] for name, f in stages.items()],
    )
    print(f"\nlimit: {common.band(pipeline[str(best)])} questions/s at batch size {best}; encoder alone {common.band(stages['encode'])}")
    common.write_json(
        args.json,
        {
            "questions": len(texts),
            "runs": args.runs,
            "best_batch_size": best,
            "limit_qps": pipeline[str(best)],
            "encoder_qps": stages["encode"],
            "by_batch_size": pipeline,
            "stages_qps": stages,
        },
    )


if __name__ == "__main__":
    main()
