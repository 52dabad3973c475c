"""Peak resident memory of each stage worker, and of the whole set, after N questions through the job system.

    .venv/bin/python bench/memory.py [--questions 2000] [--runs 3] [--backends sqlite] [--json PATH]

Each run starts fresh workers (one `cubeqa worker` per stage, with its default pool and
concurrency), sends the questions through and reads VmHWM (peak RSS), VmRSS and PSS of every
process of each worker from /proc. In the default threads pool a worker is one process holding its
stage's model; under `--worker-args "--pool prefork"` it is the Celery main process plus a child per
slot, and a worker's peak is the sum of its processes' peaks (an upper bound: they need not peak at
the same moment, and pages a child shares with its parent after fork count twice); PSS, which
splits shared pages, is given beside it.
"""

from __future__ import annotations

from typing import Any

import common

from cubeqa.supervise import worker_stage
from tasks.app import STAGES


def measure(stack: common.Stack) -> dict[str, Any]:
    """Peak and current RSS of each stage worker's processes, MB."""
    out: dict[str, Any] = {}
    for process in stack.processes:
        stage = worker_stage(process)
        pids = common.process_tree(process.pid)
        per_process = {("main" if pid == process.pid else f"child-{pid}"): common.memory_of(pid) for pid in pids}
        children = [m for name, m in per_process.items() if name != "main"]
        out[stage] = {
            "peak_mb": sum(m["peak_mb"] for m in per_process.values()),
            "rss_mb": sum(m["rss_mb"] for m in per_process.values()),
            "pss_mb": sum(m["pss_mb"] for m in per_process.values()),
            "main_peak_mb": per_process["main"]["peak_mb"],
            "child_peak_mb": max((m["peak_mb"] for m in children), default=0.0),
            "processes": float(len(pids)),
        }
    out["all"] = {key: sum(out[s][key] for s in STAGES if s in out) for key in ("peak_mb", "rss_mb", "pss_mb")}
    return out


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    common.service_options(p, redis_db=7, backends="sqlite")
    args = p.parse_args()
    texts = common.questions(args.data, args.questions)
    results: dict[str, Any] = {}
    for backend in common.backends(args.backends):
        runs = []
        for _ in range(args.runs):
            with common.job_stack(backend, args) as stack:
                run = common.run_batch(stack, texts)
                runs.append({"done": run.done, "failed": run.failed, "memory": measure(stack)})
        results[backend] = {
            "submitted": len(texts),
            "done": [r["done"] for r in runs],
            "workers": {
                name: {key: common.spread([r["memory"][name][key] for r in runs]) for key in runs[0]["memory"][name]}
                for name in runs[0]["memory"]
            },
        }
    for backend, r in results.items():
        common.table(
            f"{backend}: peak RSS after {len(texts)} questions, {args.runs} fresh runs, MB: median [min-max]",
            ["worker", "processes", "peak RSS (all processes)", "main", "largest child", "RSS now", "PSS now"],
            [
                [name, f"{w['processes']['median']:.0f}" if "processes" in w else "", common.band(w["peak_mb"], 0),
                 common.band(w["main_peak_mb"], 0) if "main_peak_mb" in w else "",
                 common.band(w["child_peak_mb"], 0) if "child_peak_mb" in w else "", common.band(w["rss_mb"], 0), common.band(w["pss_mb"], 0)]
                for name, w in r["workers"].items()
            ],
        )
    common.write_json(args.json, {"questions": len(texts), "runs": args.runs, "backends": results})


if __name__ == "__main__":
    main()
