"""`cubeqa worker`: a Celery worker serving one stage (or all three) with its model loaded once per process, or the
webhook deliveries (`--stage hooks`: no model, its config is the stage)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from celery.signals import after_setup_logger, task_prerun, worker_process_init, worker_ready, worker_shutdown
from celery.worker import state as worker_state

from pipeline.encode_stage import EncodeStage, serving_runtime
from pipeline.encoding import EncoderConfig
from storage.db import check_schema, make_engine
from tasks import runtime
from tasks.app import EMBED_QUEUE, HOOKS_QUEUE, configure, served_stages
from tasks.health import Heartbeat
from tasks.hooks import HookConfig

if TYPE_CHECKING:  # the cube, decode and rerank stages import torch: loaded only by the workers that serve them
    from pipeline import CubeStage, DecodeStage, PhraseBankConfig
    from pipeline.rerank.stage import RerankStage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    """Plain values the worker edge reads from settings and the command line."""

    stage: str  # encode, cube, decode, rerank, all, or hooks (webhook deliveries)
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
    pool: str  # threads (one process, one model copy) or prefork (one process and model copy per slot)
    task_time_limit: int
    visibility_timeout: int
    loglevel: str = "INFO"
    bank_root: Path | None = None  # knowledge banks the decode stage serves (None: only the bundle's own)
    bank_cache_bytes: int = 256 * 2**20  # loaded bank versions kept, least recently used dropped first
    min_confidence: float | None = None  # None: the bundle's threshold
    runtime: str = "auto"  # the encode stage's serving runtime: auto, torch or int8 (pipeline.encode_stage)
    hooks: HookConfig | None = None  # webhook deliveries (None: no signing secret, so the hooks stage cannot serve)

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages served; `all` takes the rerank stage only when the bundle has a reranker to load."""
        return served_stages(self.bundle_dir) if self.stage == "all" else (self.stage,)

    @property
    def queues(self) -> tuple[str, ...]:
        """The stages' queues; an encoder also takes corpus chunks of distributed bank builds (tasks.corpus)."""
        return (*self.stages, EMBED_QUEUE) if "encode" in self.stages else self.stages


WORKER_THREADS = 1  # intra-op threads per running task when CUBEQA_THREADS is 0
HOOK_CONCURRENCY = 4  # webhook attempts at once: they wait on the network, not on a core


def worker_threads(options: WorkerOptions) -> int:
    """Intra-op threads of each pool thread (or prefork child) that runs tasks: CUBEQA_THREADS, else one.

    Stage workers share the machine's cores with each other; with two intra-op threads per task each
    operator's barrier waits for a thread another process has preempted. More cores for a stage:
    more tasks at once (`--concurrency`), not more intra-op threads.
    """
    return options.threads or WORKER_THREADS


def default_concurrency(stage: str, device: str) -> int:
    """Tasks a worker runs at once unless told: one per usable core for the encoder on the CPU, else one.

    The encoder is ~80% of the work; its pool threads share one model copy and each runs one
    intra-op thread, so they use every core without OpenMP barriers across processes. The cube and
    decode stages are light, and a GPU serialises its work anyway ("auto" counts as a GPU when the
    machine shows one, checked without initialising CUDA, which must not happen before a fork).
    """
    if stage == HOOKS_QUEUE:
        return HOOK_CONCURRENCY
    on_gpu = device.startswith("cuda") or (device == "auto" and nvidia_gpu_visible())
    return usable_cores() if stage in ("encode", "all") and not on_gpu else 1


def nvidia_gpu_visible(driver: Path = Path("/proc/driver/nvidia/gpus")) -> bool:
    """Whether the NVIDIA driver lists a GPU for this machine or container."""
    return driver.is_dir() and any(driver.iterdir())


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPU cores this process may use: its affinity set, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def build_runtime(options: WorkerOptions) -> runtime.Runtime:
    """Loaders for the served stages; nothing is loaded (and CUDA is not touched) before the pool starts (after fork under prefork)."""

    def load_encode() -> EncodeStage:
        return EncodeStage(options.bundle_dir, options.encoder_config, runtime=options.runtime, threads=worker_threads(options))

    def load_cube() -> CubeStage:
        from pipeline import CubeStage

        return CubeStage(options.bundle_dir)

    decode_stages: list[DecodeStage] = []  # `--stage all`: the rerank stage shares the decode stage (its banks)

    def load_decode() -> DecodeStage:
        if not decode_stages:  # Runtime.stage loads under its lock: one copy per process
            decode_stages.append(new_decode_stage())
        return decode_stages[0]

    def new_decode_stage() -> DecodeStage:
        from pipeline import DecodeStage
        from pipeline.checkpoint import load_bundle
        from pipeline.knowledge.bank_cache import BankCache
        from pipeline.knowledge.builtin import builtin_banks
        from pipeline.knowledge.store import BankStore

        bundle = load_bundle(options.bundle_dir)
        banks = None
        if options.bank_root is not None:  # bank versions are checked against the encoder the bundle was trained with
            store = BankStore(options.bank_root, builtin=builtin_banks(options.bundle_dir, options.cache_dir))
            banks = BankCache(store, options.bank_cache_bytes, bundle.manifest.encoder)
        return DecodeStage(
            options.bundle_dir, bundle=bundle, bank_config=options.bank_config, top_k=options.top_k,
            encoder_config=options.encoder_config, cache_dir=options.cache_dir, decoder=options.decoder,
            generative_options=options.generative_options, banks=banks, min_confidence=options.min_confidence,
        )

    def load_rerank() -> RerankStage:
        """The reranker over the same banks a decode stage serves: it reads their sentences and writes the answers."""
        from pipeline.rerank.stage import RerankStage

        return RerankStage(options.bundle_dir, load_decode())

    def load_hooks() -> HookConfig:
        if options.hooks is None:
            raise ValueError("CUBEQA_WEBHOOK_SECRET is unset: webhooks are signed with it (docs/operations.md)")
        return options.hooks

    loaders = {"encode": load_encode, "cube": load_cube, "decode": load_decode, "rerank": load_rerank, HOOKS_QUEUE: load_hooks}
    return runtime.Runtime(
        database_url=options.database_url, loaders={s: loaders[s] for s in options.stages}, warm=options.stages,
        connections=max(5, options.concurrency + 1),
    )


M_ARENA_MAX = -8  # glibc mallopt parameter


def share_one_heap() -> None:
    """Makes every thread allocate from one malloc arena.

    With a heap per pool thread, each keeps its own high-water mark of freed activations, and the
    encode worker's peak RSS grows with its thread count for no gain in speed.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):  # not glibc (musl, macOS): keep the allocator's defaults
        log.debug("mallopt unavailable; allocator defaults kept")


def quiet_task_returns(**_: object) -> None:
    """Celery logs each task's return value at INFO: here that is a payload of vectors; keep failures only."""
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)


POOLS = ("threads", "prefork")
EXIT_STAGE_UNAVAILABLE = 1  # Celery's shutdown code when a child's stage cannot load


def stop_when_told(reasons: list[str]) -> Callable[[str], None]:
    """A callback for prefork children whose stage failed to load: the parent logs the reason, appends it to
    `reasons` and shuts down warm (its reserved messages go back to the queue).

    A pipe made before the fork carries the reason; the children's tasks are refused meanwhile (StageUnavailable).
    """
    read_end, write_end = os.pipe()

    def listen() -> None:
        reason = os.read(read_end, 4096).decode(errors="replace").strip()
        log.critical("stopping this worker: %s", reason)
        reasons.append(reason)
        worker_state.should_stop = EXIT_STAGE_UNAVAILABLE  # checked by the consumer's event loop

    def tell(reason: str) -> None:  # in a child
        os.write(write_end, reason.encode()[:4000] + b"\n")

    threading.Thread(target=listen, name="cubeqa-stage-watch", daemon=True).start()
    return tell



def set_threads(options: WorkerOptions, threads: int, *, search: bool) -> None:
    """Caps torch's (and FAISS's) threads in the calling thread; an int8 encode worker has no torch to cap (its ONNX
    Runtime sessions got `threads` when loaded), nor has the hooks worker, and importing torch for them would cost
    ~250 MB for nothing."""
    int8 = serving_runtime(options.runtime, options.encoder_config.device, options.bundle_dir) == "int8"
    if options.stages == ("encode",) and int8 or options.stages == (HOOKS_QUEUE,):
        return
    from pipeline.production import set_threads as set_library_threads

    set_library_threads(threads, search=search)


def run_worker(options: WorkerOptions) -> None:
    """Checks the database schema, then runs a Celery worker on the stage's queue(s) until stopped.

    Raises StageUnavailable (threads pool) when a served stage cannot load: nothing was consumed.
    """
    if options.pool not in POOLS:
        raise ValueError(f"unknown worker pool {options.pool!r}: use {' or '.join(POOLS)}")
    share_one_heap()
    engine = make_engine(options.database_url)
    check_schema(engine)
    engine.dispose()
    app = configure(options.broker_url, task_time_limit=options.task_time_limit, visibility_timeout=options.visibility_timeout)
    rt = build_runtime(options)
    runtime.install(rt)
    threads = worker_threads(options)
    searches = "decode" in options.stages or "rerank" in options.stages  # only the decode and rerank stages load FAISS

    unavailable: list[str] = []
    if options.pool == "prefork":
        rt.on_failure = stop_when_told(unavailable)

        def process_init(**_: object) -> None:
            set_threads(options, threads, search=searches)  # here, in the child's main thread, where tasks run: OpenMP's setting is per thread
            rt.after_fork()

        worker_process_init.connect(process_init, weak=False)
    else:
        rt.load_all()  # before any queue is consumed: a stage that cannot load ends the process with the reason
        configured = threading.local()

        def thread_init(**_: object) -> None:
            if not getattr(configured, "done", False):  # once per pool thread, in the thread that runs the tasks
                set_threads(options, threads, search=searches)
                configured.done = True

        task_prerun.connect(thread_init, weak=False)
    after_setup_logger.connect(quiet_task_returns, weak=False)
    hostname = f"{options.stage}-{os.getpid()}@{socket.gethostname()}"
    heartbeat = Heartbeat(hostname, options.queues)
    worker_ready.connect(lambda **_: heartbeat.start(), weak=False)  # consuming now: the stages loaded (threads pool)
    worker_shutdown.connect(lambda **_: heartbeat.stop(), weak=False)
    app.worker_main(
        [
            "worker",
            f"--queues={','.join(options.queues)}",
            f"--hostname={hostname}",
            f"--concurrency={options.concurrency}",
            f"--pool={options.pool}",
            f"--loglevel={options.loglevel}",
            "--task-events",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    if unavailable:  # worker_main drops Celery's exit status: the edge exits non-zero with the reason
        raise runtime.StageUnavailable(unavailable[0])
