"""Encode-stage throughput and parity of the serving runtimes: torch fp32, ONNX Runtime int8, torch dynamic int8.

    .venv/bin/python bench/int8.py [--bundle DIR] [--questions 512] [--rounds 3] [--batch-sizes 16,64]
        [--threads 1,2] [--skip-memory] [--json PATH]

Throughput: questions/s of `EncodeStage.encode_questions` (the bundle's tower, jobs without a reference)
on the first --questions validation questions, per sub-batch size and thread count; the runtimes are
timed interleaved (torch, int8, torch-dq, torch, ...) in one process and the median of --rounds is
reported, so load from other processes hits every runtime alike; the load average is printed beside.
Parity: cosine between each runtime's tower vectors and torch fp32's on all 1,261 validation questions
(mean, 1st percentile). Memory: peak RSS (VmHWM) of a fresh process that loads the encode stage on
each runtime and encodes the questions, and whether torch / transformers were imported. The int8 graphs
come from the bundle's runtime/ (`cubeqa export`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

VAL = ROOT / "data" / "squad_sent_val.jsonl"
PROBE = """
import json, sys, resource
from dataclasses import replace
from pathlib import Path
from pipeline.encode_stage import EncodeStage
from pipeline.encoding import EncoderConfig
bundle, runtime, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
questions = [json.loads(line)["question"] for line in open(sys.argv[4])][:n]
stage = EncodeStage(bundle, EncoderConfig(device="cpu", batch_size=16), runtime=runtime, threads=1)
if runtime == "torch":
    import torch
    torch.set_num_threads(1)
for start in range(0, len(questions), 64):
    stage.encode_questions(questions[start:start + 64], [False] * len(questions[start:start + 64]))
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
imported = {name: name in sys.modules for name in ("torch", "transformers")}
print(json.dumps({"peak_mb": int(peak) / 1024, **imported}))
"""


def torch_dynamic(stage):  # EncodeStage on torch -> the same stage with nn.Linear in torch's dynamic int8
    """The stage's teacher and tower with every nn.Linear swapped for torch's dynamically quantised int8 Linear."""
    import copy

    import torch

    from pipeline.tower import QuestionTower

    quantised = copy.copy(stage)
    encoder = copy.copy(stage.encoder)
    encoder.model = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(stage.encoder.model), {torch.nn.Linear}, dtype=torch.qint8
    )
    quantised.encoder = encoder
    tower = QuestionTower.__new__(QuestionTower)
    torch.nn.Module.__init__(tower)
    tower.config, tower.split, tower._encoder = stage.tower.config, stage.tower.split, (encoder,)
    tower.top = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(stage.tower.top), {torch.nn.Linear}, dtype=torch.qint8
    )
    quantised.tower = tower
    return quantised


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Row cosine of unit vectors: mean and 1st percentile."""
    cos = np.sum(a * b, axis=1)
    return {"mean": float(cos.mean()), "p1": float(np.percentile(cos, 1))}


def throughput(stages: dict, questions: list[str], batch: int, rounds: int) -> dict[str, float]:
    """Median questions/s of each stage's encode_questions in sub-batches of `batch`, interleaved across stages."""
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(rounds):
        for name, stage in stages.items():
            stage.encoder.config = replace(stage.encoder.config, batch_size=batch)
            started = time.perf_counter()
            for start in range(0, len(questions), 64):  # the shipped micro-batch: 64 jobs per encode task
                chunk = questions[start : start + 64]
                stage.encode_questions(chunk, [False] * len(chunk))
            times[name].append(time.perf_counter() - started)
    return {name: len(questions) / statistics.median(t) for name, t in times.items()}


def main() -> None:
    import torch

    from pipeline.encode_stage import EncodeStage
    from pipeline.encoding import EncoderConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "cubeqa" / "bundles" / "default")
    p.add_argument("--questions", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-sizes", default="16,64")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    questions = [json.loads(line)["question"] for line in VAL.open(encoding="utf-8")]
    config = EncoderConfig(device="cpu", batch_size=16)
    report: dict[str, object] = {"bundle": str(args.bundle), "cpu": os.cpu_count(), "throughput": [], "memory": {}}
    base = EncodeStage(args.bundle, config, runtime="torch")
    reference = base.encode_questions(questions).tower
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        stages = {
            "torch fp32": base,
            "int8 (onnxruntime)": EncodeStage(args.bundle, config, runtime="int8", threads=threads),
            "int8 (torch dynamic)": torch_dynamic(base),
        }
        if threads == 1:
            report["parity vs torch fp32 (tower vectors, 1261 validation questions)"] = {
                name: cosines(stage.encode_questions(questions).tower, reference)
                for name, stage in stages.items()
                if name != "torch fp32"
            }
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            qps = throughput(stages, questions[: args.questions], batch, args.rounds)
            row = {
                "threads": threads,
                "batch": batch,
                "load_average": os.getloadavg()[0],
                "questions_per_s": qps,
                "speedup": {name: q / qps["torch fp32"] for name, q in qps.items()},
            }
            report["throughput"].append(row)
            print(json.dumps(row), flush=True)
    if not args.skip_memory:
        for runtime in ("torch", "int8"):
            out = subprocess.run(
                [sys.executable, "-c", PROBE, str(args.bundle), runtime, str(args.questions), str(VAL)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            report["memory"][runtime] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
