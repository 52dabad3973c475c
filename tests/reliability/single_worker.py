"""One real `cubeqa worker --stage all` process (the three stage queues in one worker) for the bad-input
and security tests, and a Settings object built without the test run's own CUBEQA_* variables."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from jobsystem import service_env, start, stop


@contextmanager
def all_stage_worker(broker_url: str, database_url: str, log: Path, timeout: float = 180, **extra: str) -> Iterator[subprocess.Popen]:
    """Starts the worker, waits until it answers a broadcast ping, stops it (warm shutdown) on exit."""
    from tasks.app import configure

    process = start(["worker", "--stage", "all", "--loglevel", "INFO"], service_env(broker_url, database_url, **extra), log)
    try:
        name = f"all-{process.pid}@{socket.gethostname()}"
        app = configure(broker_url)
        deadline = time.monotonic() + timeout
        while not any(name in reply for reply in app.control.ping(timeout=1.0) or []):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready (exit status {process.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
        yield process
    finally:
        stop([process])


def clean_settings(**values: object):  # cubeqa.settings.Settings
    """Settings from `values` alone: the test run's CUBEQA_TEST_* variables would be unknown settings."""
    from cubeqa.settings import Settings

    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.upper().startswith("CUBEQA_")]:
            patch.delenv(name)
        return Settings(**values)
