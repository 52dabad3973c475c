"""One bank root for every command: a bank built in the quick start (SQLite beside the project) is found after the
store moves to PostgreSQL and from another directory; errors and `bank list` name the root; old banks get a hint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from jobsystem import postgres_database, redis_database, service_env

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(600)]
GUIDE = """# Pumps

The pump runs on twelve volts. Check the fuse before you open the housing.

Replace the filter once a year, or sooner in dusty places.
"""


def cubeqa(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cubeqa", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stdout + run.stderr
    return " ".join(run.stdout.split())


@pytest.fixture
def broker() -> str:
    url = redis_database()  # no workers: submitted jobs stay queued, and are dropped with the database
    yield url
    redis.Redis.from_url(url).flushdb()


def test_a_quick_start_bank_is_found_whatever_the_store_and_directory(tmp_path: Path, broker: str) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "docs").mkdir(parents=True)
    elsewhere.mkdir()
    (project / "docs" / "pumps.md").write_text(GUIDE, encoding="utf-8")
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "What voltage does the pump need?"}\n', encoding="utf-8")
    # The quick start: a SQLite file in the working directory, no CUBEQA_BANK_ROOT; the user's data directory is ours.
    env = service_env(broker, "sqlite:///cubeqa.db", XDG_DATA_HOME=str(tmp_path / "data"), COLUMNS="200")
    del env["CUBEQA_BANK_ROOT"]
    root = tmp_path / "data" / "cubeqa" / "banks"
    ok(cubeqa("db", "upgrade", env=env, cwd=project))
    built = ok(cubeqa("bank", "build", "pumps", "docs", env=env, cwd=project))
    assert f"in {root / 'pumps'}" in built and (root / "pumps" / "CURRENT").is_file()
    assert not (project / "cubeqa-banks").exists()

    with postgres_database() as url:  # the store moves to PostgreSQL
        pg = {**env, "CUBEQA_DATABASE_URL": url}
        ok(cubeqa("db", "upgrade", env=pg, cwd=project))
        assert "1 jobs queued" in ok(cubeqa("submit", str(questions), "--bank", "pumps", env=pg, cwd=project))
        assert "(bank pumps@" in ok(cubeqa("submit", str(questions), "--bank", "pumps", env=pg, cwd=elsewhere))

    ok(cubeqa("db", "upgrade", env=env, cwd=elsewhere))  # another directory, its own SQLite file
    assert "(bank pumps@" in ok(cubeqa("submit", str(questions), "--bank", "pumps", env=env, cwd=elsewhere))
    listed = ok(cubeqa("bank", "list", env=env, cwd=elsewhere))
    assert f"banks in {root}" in listed and "pumps" in listed
    missing = cubeqa("submit", str(questions), "--bank", "nope", env=env, cwd=elsewhere)
    assert missing.returncode == 1 and f"no bank named 'nope' in {root}" in " ".join(missing.stderr.split())

    # A bank left where earlier versions put it (beside the SQLite file) is pointed at, not silently missed.
    shutil.copytree(root / "pumps", project / "cubeqa-banks" / "old")
    old = cubeqa("submit", str(questions), "--bank", "old", env=env, cwd=project)
    said = " ".join(old.stderr.split())
    assert old.returncode == 1 and f"no bank named 'old' in {root}" in said
    assert f"banks found in the old location {project / 'cubeqa-banks'}" in said and "CUBEQA_BANK_ROOT=" in said
    assert "old location" in " ".join(cubeqa("bank", "list", env=env, cwd=project).stderr.split())
