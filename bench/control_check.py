"""What the control check costs each stage task: `storage.control.stage_control` on one micro-batch's job ids.

    .venv/bin/python bench/control_check.py [--jobs 32] [--stored 50000] [--reads 300]

Every stage task reads it before it works (cancelled jobs, the batch's pause), so a micro-batch pays it once per
stage. Runs against a fresh SQLite file and a scratch PostgreSQL database (CUBEQA_TEST_POSTGRES or the local
server), with `--stored` jobs in other batches beside the micro-batch's own; prints p50 and p95 of one read,
and of `SELECT 1` on the same connection pool for the floor.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Annotated

import typer
from sqlalchemy import text

from storage.control import stage_control
from storage.db import make_engine, session_factory, upgrade
from storage.repository import NewJob, create_batch
from storage.scratch import scratch_database

POSTGRES = os.environ.get("CUBEQA_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")


def timed(read: Callable[[], object], reads: int) -> tuple[float, float]:
    """p50 and p95 of `reads` calls, in milliseconds."""
    times = []
    for _ in range(reads):
        started = time.perf_counter()
        read()
        times.append(1000 * (time.perf_counter() - started))
    times.sort()
    return statistics.median(times), times[int(0.95 * len(times))]


def measure(url: str, jobs: int, stored: int, reads: int) -> str:
    """One backend's line: the check's p50/p95 with `stored` other jobs in the store, and SELECT 1's."""
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        for start in range(0, stored, 1000):
            create_batch(session=session, items=[NewJob(f"q{i}") for i in range(start, min(stored, start + 1000))])
        batch = create_batch(session=session, items=[NewJob(f"q{i}") for i in range(jobs)])

    def check() -> object:
        with sessions() as session:
            return stage_control(session=session, batch_id=batch.id, job_ids=batch.job_ids)

    def floor() -> object:
        with sessions() as session:
            return session.execute(text("SELECT 1")).all()

    p50, p95 = timed(check, reads)
    f50, f95 = timed(floor, reads)
    engine.dispose()
    return (f"stage_control of {jobs} jobs ({stored:,} others stored) p50 {p50:.2f} ms, p95 {p95:.2f} ms; "
            f"SELECT 1 p50 {f50:.2f} ms, p95 {f95:.2f} ms")


def main(
    jobs: Annotated[int, typer.Option(min=1, help="jobs in the micro-batch")] = 32,
    stored: Annotated[int, typer.Option(min=0, help="jobs of other batches in the store")] = 50_000,
    reads: Annotated[int, typer.Option(min=10, help="reads timed per backend")] = 300,
) -> None:
    sqlite = f"sqlite:///{tempfile.mkdtemp(prefix='cubeqa-bench-')}/control.db"
    print(f"sqlite: {measure(sqlite, jobs, stored, reads)}")
    with scratch_database(POSTGRES, "cubeqa_bench") as url:
        print(f"postgresql: {measure(url, jobs, stored, reads)}")


if __name__ == "__main__":
    typer.run(main)
