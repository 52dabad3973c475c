"""Real services for job-system tests: a Redis database of our own, a PostgreSQL database created
and dropped per session, SQLite files, and `cubeqa worker` subprocesses."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from storage.scratch import scratch_database
from tasks.priority import queue_length

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import Session, sessionmaker

    from storage.summary import BatchSummary

REDIS = os.environ.get("CUBEQA_TEST_REDIS", "redis://127.0.0.1:6379")
POSTGRES = os.environ.get("CUBEQA_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
STAGES = ("encode", "cube", "decode", "rerank")  # tasks.app.STAGES
ALL_DATABASES = range(9, 16)


def own_databases() -> list[int]:
    """This process's share of 9-15: all of them, or under pytest-xdist one part per worker process (gw0 9-12, gw1
    13-15 with two), so two processes starting together never both find one database free and take it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker[2:]) if worker else 0
    return [n for i, n in enumerate(ALL_DATABASES) if i * count // len(ALL_DATABASES) == index]


TEST_DATABASES = own_databases()
_handed = [0]  # how many databases this process has handed out: the next search starts after the last one
BANK_ROOT = tempfile.mkdtemp(prefix="cubeqa-test-banks-")  # this test process's bank root for its subprocesses
atexit.register(shutil.rmtree, BANK_ROOT, True)


def redis_database(wait: float = 60.0) -> str:
    """A URL of an emptied Redis database number of our own (9-15) on the local server: one no client has selected
    (test runs share the server: emptying another's database, or its workers taking our messages, breaks both). The
    search goes round the seven, so a database whose test has ended (its workers gone) serves again."""
    deadline = time.monotonic() + wait
    while True:
        for step in range(len(TEST_DATABASES)):
            number = TEST_DATABASES[(_handed[0] + step) % len(TEST_DATABASES)]
            url = f"{REDIS}/{number}"
            client = redis.Redis.from_url(url)
            try:
                mine = client.client_id()
                if any(str(c.get("db")) == str(number) and c.get("id") != str(mine) for c in client.client_list()):
                    continue
                client.flushdb()
                _handed[0] += step + 1
                return url
            finally:
                client.close()
        if time.monotonic() >= deadline:
            raise RuntimeError(f"every Redis database {TEST_DATABASES} on {REDIS} stayed in use by other clients for {wait:.0f} s")
        time.sleep(0.5)


@contextmanager
def postgres_database(server: str = POSTGRES, prefix: str = "cubeqa_test") -> Iterator[str]:
    """A fresh PostgreSQL database on the test server, dropped afterwards."""
    with scratch_database(server, prefix) as url:
        yield url


@contextmanager
def store_at(backend: str, tmp_path: Path, revision: str) -> Iterator[tuple[str, Any]]:
    """A fresh SQLite or PostgreSQL store brought up to `revision` only, to hold rows as that schema wrote them, and an
    engine on it (disposed on exit): the start of every migration test."""
    from storage.db import make_engine, upgrade

    with ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else stack.enter_context(postgres_database())
        upgrade(url, revision)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        yield url, engine


def service_env(broker_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a cubeqa subprocess: our URLs, no stray CUBEQA_* settings, banks in a scratch root
    (never the user's data directory) unless `extra` names one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUBEQA_")}
    env.update(CUBEQA_BROKER_URL=broker_url, CUBEQA_DATABASE_URL=database_url, HF_HUB_OFFLINE="1", CUBEQA_BANK_ROOT=BANK_ROOT)
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`python -m cubeqa ARGS` in its own process group, output to `log`."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "cubeqa", *args], env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(processes: list[subprocess.Popen], grace: float = 30) -> None:
    """SIGTERM (warm shutdown) to each process group, SIGKILL after `grace` seconds."""
    from cubeqa.supervise import stop_all

    stop_all(processes, grace)


@contextmanager
def stage_workers(broker_url: str, database_url: str, logdir: Path, extra_args: Sequence[str] = (), **env: str) -> Iterator[list[subprocess.Popen]]:
    """One real `cubeqa worker` process per stage (plus `extra_args`, and `env` in their environment), ready to consume;
    stopped on exit (the runner `cubeqa demo` uses)."""
    from cubeqa import supervise
    from tasks.app import configure

    with supervise.stage_workers(service_env(broker_url, database_url, **env), logdir, extra_args) as processes:
        supervise.wait_for_workers(configure(broker_url), processes, logdir, timeout=120)
        yield processes


def summary_of(sessions: sessionmaker[Session], batch_id: str) -> BatchSummary | None:
    """The batch's summary read in a session of its own."""
    from storage.summary import batch_summary

    with sessions() as session:
        return batch_summary(session=session, batch_id=batch_id)


def results_of(sessions: sessionmaker[Session], batch_id: str) -> list[dict[str, Any]]:
    """Every job of the batch as the API and CLI show it, in input order."""
    from storage.repository import iter_results

    with sessions() as session:
        return list(iter_results(session=session, batch_id=batch_id))


def view_of(sessions: sessionmaker[Session], job_id: str) -> dict[str, Any] | None:
    """One job as the API shows it, read in a session of its own."""
    from storage.repository import job_view

    with sessions() as session:
        return job_view(session=session, job_id=job_id)


def wait_for_batch(sessions: sessionmaker[Session], batch_id: str, timeout: float = 180) -> BatchSummary:
    """Polls the store until every job of the batch is final; returns the summary."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = summary_of(sessions, batch_id)
        if summary is not None and summary.finished:
            return summary
        time.sleep(0.2)
    raise TimeoutError(f"batch {batch_id} not finished after {timeout} s: {summary_of(sessions, batch_id)}")


def wait_until_idle(broker_url: str, app: Celery, timeout: float = 60) -> None:
    """Until the stage queues are empty and no worker has an active task, twice in a row."""
    client = redis.Redis.from_url(broker_url)
    quiet = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and quiet < 2:
        queued = sum(queue_length(client, stage) for stage in STAGES)
        active = app.control.inspect(timeout=1.0).active() or {}
        quiet = quiet + 1 if queued == 0 and not any(active.values()) else 0
        time.sleep(0.3)
    if quiet < 2:
        raise TimeoutError("stage queues did not drain")
