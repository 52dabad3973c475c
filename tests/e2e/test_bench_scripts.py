"""Each bench script runs on a tiny input and writes the JSON it promises (shape and counts, never timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from jobsystem import POSTGRES, redis_database

pytestmark = [pytest.mark.slow, pytest.mark.services]

TINY = ["--questions", "12", "--runs", "1", "--micro-batch", "4"]


def run(script: str, tmp_path: Path, *args: str, timed_runs: bool = True) -> dict:
    out = tmp_path / f"{script}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUBEQA_")}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{script}.py"), *args, "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["machine"]["cores"] >= 1 and (not timed_runs or figures["runs"] == 1)
    return figures


def positive(spread: dict) -> bool:
    return spread["min"] > 0 and spread["min"] <= spread["median"] <= spread["max"] and len(spread["runs"]) == 1


def test_limit(tmp_path: Path) -> None:
    figures = run("limit", tmp_path, "--questions", "12", "--runs", "1", "--batch-sizes", "4,8", "--threads", "1", "--encode-batch-sizes", "2,8")
    assert figures["questions"] == 12 and figures["best_batch_size"] in (4, 8) and figures["best_threads"] == 1
    assert figures["best_encode_batch_size"] in (2, 8)
    assert set(figures["by_configuration"]) == {f"batch {b}, 1 threads, encoder batch {e}" for b in (4, 8) for e in (2, 8)}
    assert set(figures["stages_qps"]) == {"encode", "cube", "decode"}
    assert positive(figures["limit_qps"]) and positive(figures["encoder_qps"])


def test_distributed_on_both_stores(tmp_path: Path) -> None:
    figures = run("distributed", tmp_path, *TINY, "--limit-batch-sizes", "8", "--limit-threads", "1", "--broker", redis_database(), "--postgres", POSTGRES)
    assert set(figures["backends"]) == {"sqlite", "postgresql"}
    for row in figures["backends"].values():
        assert (row["submitted"], row["done"], row["failed"], row["micro_batch"]) == (12, [12], [0], 4)
        assert positive(row["distributed_qps"]) and positive(row["limit_qps"]) and positive(row["ratio"])
        assert set(row["worker_cpu_ms_per_question"]) == {"encode", "cube", "decode", "rerank"}  # the bundle reranks
        assert positive(row["worker_cpu_ms_per_question"]["encode"])  # clock ticks of 10 ms: only the encoder is sure to register
        assert {"encode", "cube", "decode", "wait_encode", "wait_cube", "wait_decode"} <= set(row["stage_ms_per_question"])


def test_latency(tmp_path: Path) -> None:
    figures = run("latency", tmp_path, *TINY, "--backends", "sqlite", "--broker", redis_database())
    row = figures["backends"]["sqlite"]
    assert row["jobs"] == 12
    for part in ("end_to_end", "submit", "queue_wait", "compute", "sql_write", "encode", "cube", "decode"):
        assert set(row["ms"][part]) == {"p50", "p95", "p99", "mean"} and row["ms"][part]["p50"] >= 0
    assert row["ms"]["end_to_end"]["p50"] >= row["ms"]["compute"]["p50"] > 0
    assert set(figures["serialization_ms"]["1_job"]) == {"to_encode", "to_cube", "to_decode", "total"}


def test_memory(tmp_path: Path) -> None:
    figures = run("memory", tmp_path, *TINY, "--broker", redis_database())
    row = figures["backends"]["sqlite"]
    assert row["done"] == [12]
    for stage in ("encode", "cube", "decode", "rerank"):
        worker = row["workers"][stage]
        assert worker["processes"]["median"] == 1  # the default threads pool: one process holds the model
        assert worker["peak_mb"]["median"] == worker["main_peak_mb"]["median"] > 50
    stages = ("encode", "cube", "decode", "rerank")
    assert row["workers"]["all"]["peak_mb"]["median"] == pytest.approx(sum(row["workers"][s]["peak_mb"]["median"] for s in stages))


def test_scaling(tmp_path: Path) -> None:
    figures = run("scaling", tmp_path, *TINY, "--stage", "encode", "--broker", redis_database())
    row = figures["backends"]["sqlite"]
    assert row["bottleneck"] == "encode"
    assert set(row["configs"]) == {"base", "2 encode workers", "2 producers"}
    for config in row["configs"].values():
        assert config["submitted"] == 12 and config["done"] == [12] and positive(config["qps"]) and config["vs_base"] > 0


def test_encoder_threads(tmp_path: Path) -> None:
    figures = run("encoder_threads", tmp_path, "--questions", "12", "--runs", "1", "--threads", "1,2", "--encode-batch-sizes", "2,4", "--micro-batch", "4")
    expected = {f"{t} threads, sub-batch {b}" for t in (1, 2) for b in (2, 4)}
    assert figures["questions"] == 12 and figures["micro_batch"] == 4
    assert set(figures["configurations"]) == set(figures["vs_one_thread"]) == expected
    assert all(positive(f) for f in figures["configurations"].values())


def test_decoder_batch(tmp_path: Path) -> None:
    from pipeline.decoders.generative import int8_available

    if not int8_available():
        pytest.skip("this torch build has no int8 CPU engine")
    figures = run("decoder_batch", tmp_path, "--sentences", "6", "--batch-sizes", "1,4", "--runs", "1", "--mode", "beam=2,rerank=true")
    assert figures["sentences"] == 6 and set(figures["batch_sizes"]) == {"1", "4"} and figures["mode"] == "beam=2,rerank=true"
    for row in figures["batch_sizes"].values():
        assert positive(row["int8_ms"]) and positive(row["fp32_ms"]) and positive(row["int8_over_fp32"])
        for precision in ("int8", "fp32"):
            quality = row[f"{precision}_quality"]
            assert 0 < quality["fidelity"] <= 1 and 0 <= quality["same_text_as_first_batch"] <= 1
            assert quality["fidelity_vs_first_batch"]["low"] <= quality["fidelity_vs_first_batch"]["mean"] <= quality["fidelity_vs_first_batch"]["high"]
    assert figures["batch_sizes"]["1"]["int8_quality"]["same_text_as_first_batch"] == 1.0  # the first batch size against itself


def test_decoder_modes(tmp_path: Path) -> None:
    figures = run("decoder_modes", tmp_path, "--sentences", "4", "--mode", "beam=1", "--mode", "beam=2,rerank=true", timed_runs=False)
    assert figures["sentences"] == 4 and [m["mode"] for m in figures["modes"]] == ["beam=1", "beam=2,rerank=true"]
    second = figures["modes"][1]
    assert second["fidelity_vs_first"]["low"] <= second["fidelity_vs_first"]["mean"] <= second["fidelity_vs_first"]["high"]
    assert 0 <= second["same_text_as_first"] <= 1 and second["ms_median"] > 0
