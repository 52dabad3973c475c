"""Throughput with 1 and 2 workers on the bottleneck stage, and the same submission split over 2 producers.

    .venv/bin/python bench/scaling.py [--questions 2000] [--runs 3] [--backends sqlite] [--stage STAGE] [--json PATH]

Configurations, on one set of `cubeqa worker` processes:
    base          one worker process per stage, one producer
    2 producers   the same workers, the submission split over two producer processes started together
    2 workers     a second `cubeqa worker` process on the bottleneck stage, one producer
The bottleneck is the stage with the largest compute per question in the base runs (or --stage).
Ratios are to the base runs of the same script run.
"""

from __future__ import annotations

import statistics
from typing import Any

import common

from tasks.app import STAGES


def bottleneck(timings: list[dict[str, float]]) -> str:
    return max(STAGES, key=lambda stage: statistics.fmean(t.get(stage, 0.0) for t in timings))


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    common.service_options(p, redis_db=8, backends="sqlite")
    p.add_argument("--stage", choices=STAGES, default=None, help="the stage to scale (default: measured bottleneck)")
    args = p.parse_args()
    texts = common.questions(args.data, args.questions)
    results: dict[str, Any] = {}
    for backend in common.backends(args.backends):
        base: list[common.BatchRun] = []
        with common.job_stack(backend, args) as stack:
            base = [common.run_batch(stack, texts) for _ in range(args.runs)]
            timings = common.stage_timings(stack, [b for run in base for b in run.batch_ids])
            split = [common.run_batch(stack, texts, producers=2) for _ in range(args.runs)]
            stage = args.stage or bottleneck(timings)
            with common.extra_worker(stack, stage, texts[: 4 * stack.micro_batch]):
                doubled = [common.run_batch(stack, texts) for _ in range(args.runs)]
        base_qps = statistics.median(run.qps for run in base)
        configs = {"base": base, f"2 {stage} workers": doubled, "2 producers": split}
        results[backend] = {
            "bottleneck": stage,
            "stage_ms_per_question": {s: statistics.fmean(t.get(s, 0.0) for t in timings) for s in STAGES},
            "configs": {
                name: {
                    "submitted": len(texts),
                    "done": [run.done for run in runs],
                    "qps": common.spread([run.qps for run in runs]),
                    "vs_base": statistics.median(run.qps for run in runs) / base_qps,
                }
                for name, runs in configs.items()
            },
        }
    for backend, r in results.items():
        common.table(
            f"{backend}: {len(texts)} questions, {args.runs} runs each; bottleneck {r['bottleneck']} "
            f"(compute ms/question: " + ", ".join(f"{s} {v:.2f}" for s, v in r["stage_ms_per_question"].items()) + ")",
            ["configuration", "questions/s", "vs base"],
            [[name, common.band(c["qps"]), c["vs_base"]] for name, c in r["configs"].items()],
        )
    common.write_json(args.json, {"questions": len(texts), "runs": args.runs, "backends": results})


if __name__ == "__main__":
    main()
