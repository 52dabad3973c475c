"""What `cubeqa eval --json` and the bench scripts record beside their figures."""

from __future__ import annotations

import subprocess

from cubeqa.provenance import git_commit, run_record


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_the_commit_is_dirty_for_changed_or_new_code_but_not_for_written_figures(tmp_path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "docs").mkdir()
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = git(tmp_path, "rev-parse", "--short", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "docs" / "figures.json").write_text("{}")  # what a run writes
    assert git_commit(tmp_path) == head
    (tmp_path / "new.py").write_text("y = 2\n")  # untracked code the run may have imported
    assert git_commit(tmp_path) == head + "-dirty"
    (tmp_path / "new.py").unlink()
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head + "-dirty"


def test_outside_a_checkout_there_is_no_commit(tmp_path) -> None:
    assert git_commit(tmp_path) is None


def test_the_record_quotes_the_command_as_a_shell_would_take_it() -> None:
    record = run_record("cubeqa", ["eval", "--data", "my file.jsonl"])
    assert record["command"] == "cubeqa eval --data 'my file.jsonl'"
    assert {"cpu", "cpu_flags", "l3_cache", "load_average", "commit", "when"} <= set(record)
