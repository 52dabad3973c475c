"""`cubeqa worker`: a Celery worker serving one stage (or all three) with its model loaded once per process."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from celery.signals import after_setup_logger, worker_process_init

from pipeline.decoders.phrase_bank import PhraseBankConfig
from pipeline.encoder import EncoderConfig
from pipeline.production import set_threads
from pipeline.stages import CubeStage, DecodeStage, EncodeStage
from storage.db import check_schema, make_engine
from tasks import runtime
from tasks.app import STAGES, configure


@dataclass(frozen=True)
class WorkerOptions:
    """Plain values the worker edge reads from settings and the command line."""

    stage: str  # encode, cube, decode or all
    broker_url: str
    database_url: str
    bundle_dir: Path
    encoder_config: EncoderConfig
    bank_config: PhraseBankConfig
    top_k: int
    decoder: str
    generative_options: dict[str, object]
    cache_dir: Path | None
    threads: int
    concurrency: int
    task_time_limit: int
    visibility_timeout: int
    loglevel: str = "INFO"

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES if self.stage == "all" else (self.stage,)


WORKER_THREADS = 1  # intra-op threads of a worker process when CUBEQA_THREADS is 0


def worker_threads(options: WorkerOptions) -> int:
    """Intra-op threads of each worker process: CUBEQA_THREADS, else one.

    Stage workers share the machine's cores with each other; with two threads per process each
    operator's barrier waits for a thread another process has preempted (measured on 2 cores: one
    question's encode went from ~25 ms to 130-480 ms). More cores for a stage: more processes
    (`--concurrency`), not more threads.
    """
    return options.threads or WORKER_THREADS


def build_runtime(options: WorkerOptions) -> runtime.Runtime:
    """Loaders for the served stages; nothing is loaded (and CUDA is not touched) until after fork."""

    def load_encode() -> EncodeStage:
        return EncodeStage(options.bundle_dir, options.encoder_config)

    def load_cube() -> CubeStage:
        return CubeStage(options.bundle_dir)

    def load_decode() -> DecodeStage:
        return DecodeStage(
            options.bundle_dir, bank_config=options.bank_config, top_k=options.top_k, encoder_config=options.encoder_config,
            cache_dir=options.cache_dir, decoder=options.decoder, generative_options=options.generative_options,
        )

    loaders = {"encode": load_encode, "cube": load_cube, "decode": load_decode}
    return runtime.Runtime(
        database_url=options.database_url, loaders={s: loaders[s] for s in options.stages}, warm=options.stages
    )


def quiet_task_returns(**_: object) -> None:
    """Celery logs each task's return value at INFO: here that is a payload of vectors; keep failures only."""
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)


def run_worker(options: WorkerOptions) -> None:
    """Checks the database schema, then runs a prefork Celery worker on the stage's queue(s) until stopped."""
    engine = make_engine(options.database_url)
    check_schema(engine)
    engine.dispose()
    app = configure(options.broker_url, task_time_limit=options.task_time_limit, visibility_timeout=options.visibility_timeout)
    rt = build_runtime(options)
    runtime.install(rt)
    threads = worker_threads(options)

    def process_init(**_: object) -> None:
        set_threads(threads)  # here, in the child's main thread, where tasks run: OpenMP's setting is per thread
        rt.after_fork()

    worker_process_init.connect(process_init, weak=False)
    after_setup_logger.connect(quiet_task_returns, weak=False)
    app.worker_main(
        [
            "worker",
            f"--queues={','.join(options.stages)}",
            f"--hostname={options.stage}-{os.getpid()}@{socket.gethostname()}",
            f"--concurrency={options.concurrency}",
            "--pool=prefork",
            f"--loglevel={options.loglevel}",
            "--task-events",
            "--without-gossip",
            "--without-mingle",
        ]
    )
