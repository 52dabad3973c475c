"""Priorities on the real Redis broker with real worker processes: an interactive job goes at level 0 and is answered
before any bulk job; bulk micro-batches go at levels by their place in their batch, keep them through the later
stages, and a batch submitted after another is served alongside it instead of after it."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from conftest import migrated
from jobsystem import service_env, start, stop, wait_for_batch

from storage.models import Job
from storage.repository import NewJob
from tasks.priority import Schedule, queue_keys, queue_length
from tasks.producer import submit

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(600)]
QUESTIONS = [f"Where is place number {n} located?" for n in range(12)]


def levels(client: redis.Redis, queue: str) -> dict[int, int]:
    """Waiting messages of `queue` by priority level (levels holding none left out)."""
    counts = {level: int(client.llen(key)) for level, key in enumerate(queue_keys(queue))}
    return {level: n for level, n in counts.items() if n}


def finished(sessions, batch_id: str) -> list:
    with sessions() as session:
        return sorted(job.finished_at for job in session.query(Job).filter(Job.batch_id == batch_id))


def wait_for_level_counts(client: redis.Redis, queue: str, total: int, process, log: Path, timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    while queue_length(client, queue) < total:
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{queue}: {levels(client, queue)} of {total}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


@pytest.mark.parametrize("schedule", [Schedule.FAIR, Schedule.FIFO])
def test_interactive_first_and_batches_interleaved(schedule: Schedule, broker_url: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    sessions = migrated(url)
    client = redis.Redis.from_url(broker_url)
    jobs = [NewJob(question=q, line=i + 1) for i, q in enumerate(QUESTIONS)]
    first = submit(sessions, jobs, micro_batch=2, source="bulk a", schedule=schedule).batch_id
    person = submit(sessions, jobs[:1], micro_batch=2, source="api:job", interactive=True, schedule=schedule).batch_id
    second = submit(sessions, jobs, micro_batch=2, source="bulk b", schedule=schedule).batch_id
    # Six micro-batches a batch: levels 1, 2, 2, 3, 3, 3 each (fifo: all 13 at level 0).
    expected = {0: 1, 1: 2, 2: 4, 3: 6} if schedule is Schedule.FAIR else {0: 13}
    assert levels(client, "encode") == expected

    env = service_env(broker_url, url)
    log = tmp_path / "encode.log"
    encoder = start(["worker", "--stage", "encode", "--loglevel", "INFO"], env, log)
    try:
        wait_for_level_counts(client, "cube", 13, encoder, log)
    finally:
        stop([encoder])
    assert levels(client, "cube") == expected  # the next stage's message keeps the level of the first

    log = tmp_path / "rest.log"
    rest = start(["worker", "--stage", "all", "--concurrency", "1", "--loglevel", "INFO"], env, log)  # one task at a time
    try:
        for batch_id in (first, person, second):
            wait_for_batch(sessions, batch_id, timeout=300)
    finally:
        stop([rest])
    a, b, (asked,) = finished(sessions, first), finished(sessions, second), finished(sessions, person)
    if schedule is Schedule.FAIR:
        assert asked < a[0] and asked < b[0]  # the person's question first
        assert b[0] < a[-1]  # the later batch is served alongside the earlier one
    else:  # first come, first served: the encode worker's two threads may swap neighbours, no more
        assert sum(t < asked for t in a) >= len(a) - 4  # behind all of the earlier batch but its last two micro-batches
        assert sum(t < b[0] for t in a) >= len(a) - 4 and b[-1] > a[-1]
