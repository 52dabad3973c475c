"""The `cubeqa` command line from the outside, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, read_jsonl

pytestmark = pytest.mark.slow


def cubeqa(*args: str | bytes, env: dict[str, str] | None = None, cwd: Path = ROOT, stdin: str = "") -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cubeqa", *args], input=stdin, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def trained(small_data, tmp_path_factory) -> dict[str, object]:
    work = tmp_path_factory.mktemp("cli")
    env = {"CUBEQA_CACHE_DIR": str(work / "cache")}
    bundle = work / "bundle"
    run = cubeqa(
        "train", "--train", str(small_data["train"]), "--val", str(small_data["val"]), "--out", str(bundle),
        "--size", "4,4,2", "--channels", "4", "--hidden", "8", "--steps", "2", "--epochs", "2", "--batch-size", "32",
        env=env,
    )
    assert run.returncode == 0, run.stderr
    return {"bundle": bundle, "env": {**env, "CUBEQA_BUNDLE_DIR": str(bundle)}, "output": run.stdout, "work": work}


def score_line(result) -> str:
    """What `ask` prints after the answer: the fused score, the rerank score when the rerank stage answered, the path."""
    reranked = (result.evidence or {}).get("rerank")
    return f"score {result.score:.4f}" + ("" if reranked is None else f"  reranked {reranked:.2f}") + f"  path {result.path}"


def test_train_writes_a_bundle_and_prints_the_validation_table(trained) -> None:
    bundle: Path = trained["bundle"]
    assert {p.name for p in bundle.iterdir()} == {
        "manifest.json", "cube.safetensors", "bank.jsonl", "bank.safetensors", "tower.safetensors", "tower.json", "reference_cube.safetensors",
        "runtime", "rerank.txt", "rerank.json",
    }  # the default trains the question tower, then the cube, and the comparison cube, exports the int8 runtime, trains the reranker
    assert {p.name for p in (bundle / "runtime").iterdir()} == {
        "runtime.json", "encoder.int8.onnx", "tower_lower.int8.onnx", "tower_tuned.int8.onnx", "tower_frozen.int8.onnx",
    }
    assert "int8 runtime: encoder.int8.onnx" in trained["output"]
    assert "cube − mean_shift: cos" in trained["output"] and "tower − identity: R@1" in trained["output"]
    assert "bundle written to" in trained["output"]
    assert "reranker (lightgbm-lambdarank, 300 trees, top 20): validation P@1" in " ".join(trained["output"].split())


def test_ask_gives_the_library_answer_from_the_trained_bank(trained, small_data) -> None:
    from pipeline import ProductionPipeline

    question = read_jsonl(small_data["val"])[3]["question"]
    run = cubeqa("ask", question, env=trained["env"])
    assert run.returncode == 0, run.stderr
    expected = ProductionPipeline.from_bundle(trained["bundle"]).process_batch([question])[0]
    assert expected.answer in {r["answer"] for r in read_jsonl(small_data["train"])} | {"no confident answer"}
    assert "answer: " + " ".join(expected.answer.split()) in " ".join(run.stdout.split())
    assert score_line(expected) in run.stdout


def test_train_logs_a_line_per_epoch_with_rate_and_eta_when_stdout_is_not_a_terminal(trained) -> None:
    epochs = [line for line in trained["output"].splitlines() if line.startswith("train loss")]
    assert len(epochs) == 2, trained["output"]
    assert re.fullmatch(r"train loss -?\d\.\d{4} val cos -?\d\.\d{4}  1/2 \(50%\)  [\d.,]+(/s| s/it)  elapsed \d:\d\d:\d\d  ETA \d:\d\d:\d\d", epochs[0])
    assert re.fullmatch(r"train loss .*  2/2 \(100%\)  [\d.,]+(/s| s/it)  elapsed \d:\d\d:\d\d  done", epochs[1])
    assert not re.search(r"━ +\d+/\d+", trained["output"])  # no bar frames in a log


def answers(stdout: str) -> list[tuple[str, str]]:
    """(question, answer) pairs from `cubeqa ask` output, rich's line wrapping undone."""
    blocks = " ".join(stdout.split()).split("question: ")[1:]
    return [(block.split(" answer: ")[0], block.split(" answer: ")[1].split(" score ")[0]) for block in blocks]


def test_ask_on_the_int8_runtime_scores_as_torch_does(trained, small_data) -> None:
    from pipeline import ProductionPipeline

    question = read_jsonl(small_data["val"])[3]["question"]
    run = cubeqa("ask", question, env={**trained["env"], "CUBEQA_RUNTIME": "int8"})
    assert run.returncode == 0, run.stderr
    expected = ProductionPipeline.from_bundle(trained["bundle"], runtime="torch").process_batch([question])[0]
    score = float(re.search(r"score (-?[0-9.]+)", run.stdout).group(1))
    assert abs(score - expected.score) < 0.03  # int8 question vectors are within ~0.01 in cosine of torch's


def test_export_rewrites_the_runtime_of_an_existing_bundle(trained, tmp_path) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(trained["bundle"], bundle, ignore=shutil.ignore_patterns("runtime"))
    run = cubeqa("export", "--bundle", str(bundle), env=trained["env"])
    assert run.returncode == 0, run.stderr
    record = json.loads((bundle / "runtime" / "runtime.json").read_text())
    assert record["tower"]["torch_weights"] and record["parity"]["tower"]["mean"] > 0.98
    assert f"written to {bundle / 'runtime'}" in " ".join(run.stdout.split())


def test_ask_answers_questions_from_arguments_and_a_file_with_one_load(trained, small_data, tmp_path: Path) -> None:
    from pipeline.production import ProductionPipeline

    questions = [row["question"] for row in read_jsonl(small_data["val"])[:5]]
    listed = tmp_path / "questions.txt"
    listed.write_bytes(("\n".join(questions[2:4]) + "\n\n   \n").encode() + b"caf\xe9?\n" + questions[4].encode() + b"\n")
    run = cubeqa("ask", questions[0], questions[1], "--file", str(listed), env=trained["env"], stdin="never read\n")
    assert run.returncode == 0, run.stderr
    assert f"skipped {listed}:5: not UTF-8" in run.stderr
    expected = ProductionPipeline.from_bundle(trained["bundle"]).process_batch(questions)
    assert answers(run.stdout) == [(" ".join(r.question.split()), " ".join(r.answer.split())) for r in expected]
    assert all(score_line(r) in run.stdout for r in expected)


def test_ask_reads_standard_input_when_no_question_is_given(trained, small_data) -> None:
    from pipeline.production import ProductionPipeline

    questions = [row["question"] for row in read_jsonl(small_data["val"])[5:8]]
    run = cubeqa("ask", env=trained["env"], stdin="\n".join(questions) + "\n")
    assert run.returncode == 0, run.stderr
    expected = ProductionPipeline.from_bundle(trained["bundle"]).process_batch(questions)
    assert [answer for _, answer in answers(run.stdout)] == [" ".join(r.answer.split()) for r in expected]


def test_ask_prompts_for_questions_at_a_terminal(trained, small_data) -> None:
    import pty

    from pipeline.production import ProductionPipeline

    questions = [row["question"] for row in read_jsonl(small_data["val"])[8:9]]
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cubeqa", "ask"], stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **trained["env"]},
    )
    os.close(terminal)
    try:
        os.write(controller, f"{questions[0]}\n   \n".encode())  # an empty line ends the session
        out, err = process.communicate(timeout=600)
    finally:
        os.close(controller)
    assert process.returncode == 0, err.decode()
    expected = ProductionPipeline.from_bundle(trained["bundle"]).process_batch(questions[:1])[0]
    assert out.decode().count("question> ") == 2 and out.decode().count("answer: ") == 1
    assert "answer: " + " ".join(expected.answer.split()) in " ".join(out.decode().split())
    assert "an empty line or Ctrl-D ends" in err.decode()


def test_eval_writes_the_figures_as_json(trained, small_data) -> None:
    out = trained["work"] / "eval.json"
    run = cubeqa(
        "eval", "--data", str(small_data["val"]), "--train", str(small_data["train"]), "--json", str(out), "--resamples", "200",
        env=trained["env"],
    )
    assert run.returncode == 0, run.stderr
    figures = json.loads(out.read_text())
    assert figures["split_size"] == 60
    assert {"cube_cos", "identity_cos", "mean_shift_cos", "ridge_cos", "residual_ridge_cos", "mean_answer_cos", "nearest_question_cos",
            "tower_cos", "cube_only_cos"} == set(figures["cos"])
    assert {"R@1", "R@10", "MRR"} == set(figures["retrieval_open_bank"]["cube"])
    assert {"cube", "identity", "mean_shift", "residual_ridge", "tower", "cube_only"} == set(figures["retrieval_open_bank"])
    assert {"e2e_cos_closed", "e2e_cos_open", "echo_rate_closed"} <= set(figures["e2e"])
    interval = figures["differences"]["cube − identity: cos"]
    assert interval["low"] <= interval["mean"] <= interval["high"]
    assert "identity_cos" in run.stdout
    machine = figures["machine"]  # where the figures come from, as the bench scripts record it
    assert machine["command"].startswith("cubeqa eval --data") and machine["cores"] >= 1 and machine["torch"].startswith("2.")
    assert machine["commit"] is None or len(machine["commit"].removesuffix("-dirty")) >= 7


def test_eval_measures_all_three_decoders_of_the_shipped_bundle(small_data, tmp_path) -> None:
    out = tmp_path / "decoders.json"
    run = cubeqa(
        "eval", "--data", str(small_data["val"]), "--train", str(small_data["train"]), "--json", str(out), "--resamples", "50",
        "--decoder", "all", "--sentences", "6", env={"CUBEQA_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert run.returncode == 0, run.stderr
    decoders = json.loads(out.read_text())["decoders"]
    modes = [r["mode"] for r in decoders["round_trip"]]
    assert modes[0].startswith("default (") and any(m.startswith("greedy") for m in modes)
    for trip in decoders["round_trip"]:
        assert trip["sentences"] == 6 and trip["real_words"] >= 0.98 and trip["length_ratio"] > 0 and trip["ms_median"] <= trip["ms_p90"]
        assert -1 <= trip["fidelity"] <= 1 and 0 <= trip["bleu"] <= 100
    qa = {q["decoder"]: q for q in decoders["qa"]}
    assert set(qa) == {"bank", "generative", "hybrid"} and decoders["split_size"] == 60
    assert qa["hybrid"]["e2e_cos"] >= qa["bank"]["e2e_cos"] - 1e-9 and qa["hybrid"]["echo_rate"] <= qa["bank"]["echo_rate"] + 1e-9
    assert "length ratio" in run.stdout and "nearest training sentence" in run.stdout


def test_the_shipped_default_bundle_answers_right_after_install() -> None:
    run = cubeqa("ask", "What year did building begin of fort amsterdam on manhattan island?")
    assert run.returncode == 0, run.stderr
    assert "answer:" in run.stdout and "path bank" in run.stdout
    assert "in 1625, construction was started" in run.stdout.lower()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("ask", "   "), {}, "empty"),
        (("ask", "why?"), {"CUBEQA_BUNDLE_DIR": "/nonexistent/bundle"}, "does not exist"),
        (("eval", "--data", "/nonexistent.jsonl"), {}, "No such file"),
        (("ask", b"caf\xe9 \xff?"), {}, "not valid Unicode"),
        (("train", "--out", "/tmp/never-written", "--size", "8,x,2"), {}, "--size must be three"),
        (("ask", "--decoder", "generative", "--bank", "default", "why?"), {}, "reads no bank"),
    ],
)
def test_errors_are_one_clear_line_and_exit_1(args, env, message) -> None:
    run = cubeqa(*args, env=env)
    assert run.returncode == 1
    assert message in run.stderr and "Traceback" not in run.stderr


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    run = cubeqa("--version")
    assert run.returncode == 0 and run.stdout.strip() == f"cubeqa {version('cubeqa')}"


def test_bad_settings_are_refused() -> None:
    run = cubeqa("ask", "why?", env={"CUBEQA_MIN_SCORE": "7"})
    assert run.returncode == 2 and "CUBEQA_MIN_SCORE" in run.stderr and "Traceback" not in run.stderr
    run = cubeqa("train", "--out", "/tmp/never-written", "--batch-size", "0")
    assert run.returncode == 2 and "batch-size" in run.stderr


def test_the_sweep_script_prints_a_row_per_configuration(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    run = subprocess.run(
        [sys.executable, "bench/cube_sweep.py", "--limit", "150", "--only", "4x4x2 C=16", "--resamples", "50", "--json", str(out), "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr
    assert "train 150 pairs, validation 150 pairs" in run.stdout
    rows = json.loads(out.read_text())
    assert [row["config"] for row in rows] == ["4x4x2 C=16"]
    assert rows[0]["cos vs identity"]["low"] <= rows[0]["cos vs identity"]["mean"] <= rows[0]["cos vs identity"]["high"]


def test_batches_fit_80_columns_and_results_read_as_a_table_at_a_terminal(tmp_path: Path) -> None:
    import pty

    from sqlalchemy.orm import sessionmaker

    from storage.db import make_engine
    from storage.repository import JobOutcome, NewJob, create_batch, record_outcomes

    env = {"CUBEQA_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}", "COLUMNS": "80"}
    assert cubeqa("db", "upgrade", env=env).returncode == 0
    sessions = sessionmaker(make_engine(env["CUBEQA_DATABASE_URL"]))
    with sessions.begin() as session:
        created = create_batch(session=session, items=[NewJob(question="Where is it?"), NewJob(question="Who built it?")],
                               source=str(tmp_path / "a-rather-long-file-name-of-questions.jsonl"))
    with sessions.begin() as session:
        record_outcomes(session=session, model_version="m", outcomes=[
            JobOutcome(job_id=created.jobs[0].id, answer="In the north.", decoder_path="bank", score=0.9, confidence=0.999),
            JobOutcome(job_id=created.jobs[1].id, answer="no confident answer", decoder_path="none", score=0.5, confidence=0.31),
        ])
    listing = cubeqa("batches", env=env)
    assert listing.returncode == 0 and created.id[:12] in listing.stdout
    assert max(len(line) for line in listing.stdout.splitlines()) <= 80

    controller, terminal = pty.openpty()  # results on a terminal: a table, not JSON lines
    process = subprocess.Popen([sys.executable, "-m", "cubeqa", "results", created.id[:8]], stdout=terminal,
                               stderr=subprocess.PIPE, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=60) == 0, process.stderr.read().decode() if process.stderr else ""
    shown = b"".join(chunks).decode()
    assert "In the north." in shown and "> 0.99" in shown and "0.31" in shown and "{" not in shown
    piped = cubeqa("results", created.id, env=env)  # not a terminal: JSON lines, as before
    assert [json.loads(line)["answer"] for line in piped.stdout.splitlines()] == ["In the north.", "no confident answer"]


def test_training_into_a_copy_of_the_shipped_bundle_leaves_bank_default_answering(small_data, tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(ROOT / "cubeqa" / "bundles" / "default", bundle)
    env = {"CUBEQA_CACHE_DIR": str(tmp_path / "cache"), "CUBEQA_BUNDLE_DIR": str(bundle),
           "CUBEQA_BANK_ROOT": str(tmp_path / "banks")}
    run = cubeqa("train", "--train", str(small_data["train"]), "--val", str(small_data["val"]), "--out", str(bundle),
                 "--size", "4,4,2", "--channels", "4", "--hidden", "8", "--steps", "2", "--epochs", "1", "--batch-size", "32",
                 "--tower-layers", "0", env=env)
    assert run.returncode == 0, run.stderr
    assert "bank default" in run.stdout
    listed = cubeqa("bank", "show", "default", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    retrained = len(read_jsonl(bundle / "bank.jsonl"))
    assert json.loads(listed.stdout)["sentences"] == retrained < 11_000  # the retrained bank (unique answers), not the shipped one
    question = read_jsonl(small_data["train"])[0]["question"]
    asked = cubeqa("ask", "--bank", "default", "--min-confidence", "0", question, env=env)
    assert asked.returncode == 0 and "answer:" in asked.stdout, asked.stderr
