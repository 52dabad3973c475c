"""Refusals of the `cubeqa` model commands that come before any model loads (typer's runner: cheap)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cubeqa.cli import app


def run(*args: str, stdin: bytes | str | None = None):  # click's Result
    return CliRunner().invoke(app, list(args), input=stdin, env={"CUBEQA_BUNDLE_DIR": "/nonexistent/bundle"})


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("ask", "one?", "two?", "--reference", "an answer"), None, "--reference scores one answer: give exactly one question with it (2 given)"),
        (("ask", "why?", "--decoder", "oracle"), None, "--decoder must be bank, generative or hybrid, got 'oracle'"),
        (("ask",), "\n   \n\n", "standard input: no questions (one a line)"),
        (("ask", "--file", "-"), "", "standard input: no questions (one a line)"),
        (("ask", "--file", "/nonexistent/questions.txt"), None, "No such file or directory"),
        (("ask", "why?", "   "), None, "text #1 is empty or whitespace only"),
        (("train", "--out", "/tmp/never-written", "--boundary", "mirror"), None, "--boundary must be walls or periodic, got 'mirror'"),
        (("train", "--out", "/tmp/never-written", "--injection", "side"), None, "--injection must be projection or exact, got 'side'"),
        (("train", "--out", "/tmp/never-written", "--size", "8,8"), None, "--size must be three comma-separated integers"),
        (("train-decoder", "--precision", "fp8"), None, "--precision must be auto, bf16 or fp32, got 'fp8'"),
        (("bank", "add", "house", "/tmp", "--replace"), None, "--replace is for `cubeqa bank build`"),
    ],
)
def test_bad_input_is_one_line_before_any_model_loads(args, stdin, message) -> None:
    result = run(*args, stdin=stdin)
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not Path("/tmp/never-written").exists()


def test_bad_lines_of_a_question_file_are_named_and_skipped(tmp_path: Path) -> None:
    questions = tmp_path / "questions.txt"
    questions.write_bytes(b"\xef\xbb\xbf   \n\ncaf\xe9?\nnul \x00 here\n" + b"x" * 5000 + b"\n")
    result = run("ask", "--file", str(questions))
    assert result.exit_code == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("skipped")] == [
        f"skipped {questions}:3: not UTF-8 (invalid continuation byte at byte 3)",
        f"skipped {questions}:4: 'question' contains a NUL character",
        f"skipped {questions}:5: 'question' has 5000 characters; the limit is 4000",
    ]
    assert f"error: {questions}: no questions (one a line)" in result.stderr

