"""Bank builds started over HTTP: run one at a time in a thread of the API process by `cubeqa.bank_build.build_bank`
(the CLI's build; the new sentences are embedded on the encode workers through the `embed` queue), each with a
record in Redis that any API process can read.

    cubeqa:bank-build:ID            hash: state, stage, done, total, outcome (kept RECORD_TTL seconds)
    cubeqa:bank-build:active:NAME   id of the build of NAME queued or running: a lease its process renews every
                                    LEASE / 3 s, so a second build of NAME is refused, and a build whose process
                                    died is reported failed once the lease lapses
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from cubeqa.bank_build import BuildOptions, Progress, build_bank, build_errors
from cubeqa.settings import Settings
from cubeqa.wiring import bank_store, encoder_config

if TYPE_CHECKING:
    from pipeline import TeacherEncoder
    from pipeline.knowledge.store import BankInfo, BankStore

log = logging.getLogger("cubeqa.api.banks")
RECORD = "cubeqa:bank-build:{}"
ACTIVE = "cubeqa:bank-build:active:{}"
RECORD_TTL = 7 * 24 * 3600
LEASE = 30  # seconds
LOST = "the API process running this build stopped before it finished; start the build again"
Run = Callable[[str, list[Path], BuildOptions, Progress], "BankInfo"]


class BuildRunning(Exception):
    """Another build of the same bank is queued or running."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class BankBuilds:
    """Queues builds for a daemon thread (one at a time: each embeds on the same workers) and keeps their records."""

    def __init__(self, broker: redis.Redis, run: Run, staging_root: Path) -> None:
        self.broker = broker
        self.run = run
        self.staging_root = staging_root
        self.pending: queue.Queue[tuple[str, str, Path, list[str], BuildOptions]] = queue.Queue()
        self.leases: dict[str, str] = {}  # build id -> bank name, of this process's queued and running builds
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def active(self, name: str) -> str | None:
        """The id of the build of bank `name` queued or running (in any API process), if any."""
        held = self.broker.get(ACTIVE.format(name))
        return _text(held) if held else None

    def reserve(self, name: str) -> tuple[str, Path]:
        """A new build id holding the lease of bank `name`, and an empty folder for its uploads: the same folder for
        every build of `name`, so the same documents give the same provenance and so the same version."""
        build_id = uuid.uuid4().hex
        if not self.broker.set(ACTIVE.format(name), build_id, nx=True, ex=LEASE):
            raise BuildRunning(f"a build of bank {name!r} is already queued or running ({self.active(name)}); "
                               "wait for it to finish")
        with self.lock:
            self.leases[build_id] = name
            if not self.threads:  # started on the first build: an API that builds nothing runs no threads
                self.threads = [threading.Thread(target=target, name=f"cubeqa-bank-{role}", daemon=True)
                                for role, target in (("builds", self.serve), ("leases", self.renew))]
                for thread in self.threads:
                    thread.start()
        staging = self.staging_root / name
        try:
            shutil.rmtree(staging, ignore_errors=True)  # a build's leftovers, from a process killed mid-way
            staging.mkdir(parents=True)
        except BaseException:
            self.release(build_id, name, staging)
            raise
        return build_id, staging

    def release(self, build_id: str, name: str, staging: Path) -> None:
        """Removes the staged files and gives up the lease of bank `name`, if this build still holds it."""
        shutil.rmtree(staging, ignore_errors=True)
        with self.lock:
            self.leases.pop(build_id, None)
        try:
            if self.active(name) == build_id:
                self.broker.delete(ACTIVE.format(name))
        except redis.RedisError as exc:  # the lease lapses by itself
            log.warning("bank build %s: lease not released: %s", build_id, exc)

    def start(self, build_id: str, name: str, staging: Path, files: list[str], options: BuildOptions) -> dict[str, str]:
        """Queues reserved build `build_id` of the files staged in `staging` (released once it ends); its first record."""
        record = {"id": build_id, "bank": name, "state": "queued", "stage": "", "done": "0", "total": "0",
                  "files": json.dumps(files), "version": "", "sentences": "", "notes": "[]", "error": "",
                  "created_at": now(), "finished_at": ""}
        key = RECORD.format(build_id)
        with self.broker.pipeline() as transaction:
            transaction.hset(key, mapping={k: v for k, v in record.items()})
            transaction.expire(key, RECORD_TTL)
            transaction.execute()
        self.pending.put((build_id, name, staging, files, options))
        return record

    def get(self, build_id: str) -> dict[str, str] | None:
        """A build's record; one queued or running whose lease lapsed is reported failed (its process died)."""
        record = self._read(build_id)
        if record and record["state"] in ("queued", "running") and self.active(record["bank"]) != build_id:
            record = self._read(build_id)  # it may have ended between the two reads
            if record and record["state"] in ("queued", "running"):
                record |= {"state": "failed", "error": LOST}
        return record

    def _read(self, build_id: str) -> dict[str, str] | None:
        raw = self.broker.hgetall(RECORD.format(build_id))
        return {_text(k): _text(v) for k, v in raw.items()} if raw else None

    def serve(self) -> None:
        """The build thread: one queued build after another."""
        while True:
            try:
                self.build(*self.pending.get())
            except Exception:  # the thread must outlive any one build
                log.exception("bank build thread")

    def renew(self) -> None:
        """The lease thread: renews this process's leases while their builds are queued or running."""
        while True:
            with self.lock:
                held = list(self.leases.values())
            for name in held:
                try:
                    self.broker.expire(ACTIVE.format(name), LEASE)
                except redis.RedisError as exc:
                    log.warning("bank build lease of %s not renewed: %s", name, exc)
            time.sleep(LEASE / 3)

    def build(self, build_id: str, name: str, staging: Path, files: list[str], options: BuildOptions) -> None:
        """Runs one build and records its progress and outcome; the staged files go in any case."""
        key = RECORD.format(build_id)

        def record(**fields: object) -> None:
            try:
                self.broker.hset(key, mapping={k: str(v) for k, v in fields.items()})
            except redis.RedisError as exc:  # progress is lost, not the build
                log.warning("bank build %s: record not written: %s", build_id, exc)

        def hidden(text: str) -> str:  # where the server staged the files is none of the client's business
            return text.replace(f"{staging}{os.sep}", "")

        record(state="running")
        try:
            info = self.run(name, [staging / f for f in files], options,
                            lambda stage, done, total: record(stage=stage, done=done, total=total))
            record(state="done", version=info.version, sentences=info.sentences,
                   notes=json.dumps([hidden(n) for n in info.notes]), finished_at=now())
        except build_errors() as exc:
            record(state="failed", error=hidden(str(exc)), finished_at=now())
        except Exception as exc:  # a bug: the client sees its type, the log the traceback
            log.exception("bank build %s of %s failed", build_id, name)
            record(state="failed", error=f"internal error ({type(exc).__name__}); the API log has the details",
                   finished_at=now())
        finally:
            self.release(build_id, name, staging)


@dataclass(frozen=True)
class BankService:
    """What the bank routes and the dashboard's banks page use: the store, the builds, the upload limit."""

    store: BankStore
    builds: BankBuilds
    max_unpacked: int


def bank_service(settings: Settings, broker: redis.Redis) -> BankService:
    """The banks of these settings; builds load the teacher encoder once, on the first build, and embed on the workers."""

    @functools.cache
    def teacher() -> TeacherEncoder:
        from pipeline import TeacherEncoder

        return TeacherEncoder(encoder_config(settings))

    def run(name: str, paths: list[Path], options: BuildOptions, progress: Progress) -> BankInfo:
        return build_bank(settings, name, paths, options, progress=progress, encoder=teacher())

    staging = Path(tempfile.gettempdir()) / f"cubeqa-uploads-{os.getuid()}"
    return BankService(store=bank_store(settings), builds=BankBuilds(broker, run, staging),
                       max_unpacked=settings.max_unpacked_bytes)
