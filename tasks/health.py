"""A consumption check: a ping task sent through each stage queue, answered in Redis by whichever worker ran it.

A worker process can be alive yet no longer consuming (e.g. after a broker reconnect); only a task that
went through the queue proves the stage works.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from tasks import runtime
from tasks.app import OPTIONAL_STAGES, STAGES, app
from tasks.priority import queue_length

log = logging.getLogger(__name__)
PONG_KEY = "cubeqa:pong:{token}"
PONG_TTL = 120


FAILING = "!"  # an answer that starts with it is a worker saying its stage cannot load, and why


@app.task(name="cubeqa.ping", bind=True, acks_late=False)
def ping(self, token: str, stage: str | None = None) -> None:
    """Writes this worker's name under the token in the broker's Redis once `stage` loaded (or why it cannot)."""
    answer = self.request.hostname or "?"
    if stage is not None:
        try:
            runtime.current().stage(stage)  # waits for a warm-up in progress: ready means able to serve
        except runtime.StageUnavailable as exc:
            answer = f"{FAILING}{answer}: {exc}"
    with self.app.connection_for_write() as connection:
        connection.default_channel.client.set(PONG_KEY.format(token=token), answer, ex=PONG_TTL)


@dataclass(frozen=True)
class StageHealth:
    stage: str
    worker: str | None  # who answered, None if nobody did in time
    seconds: float | None
    problem: str | None = None  # the answering worker's reason its stage cannot load

    @property
    def ok(self) -> bool:
        return self.worker is not None and self.problem is None


def probe_stages(timeout: float = 10.0, stages: tuple[str, ...] = STAGES) -> list[StageHealth]:
    """Sends one ping through each stage queue and waits up to `timeout` seconds for the answers."""
    started = time.monotonic()
    tokens = {stage: uuid.uuid4().hex for stage in stages}
    for stage, token in tokens.items():
        ping.apply_async((token, stage), queue=stage, expires=timeout)
    answers: dict[str, StageHealth] = {}
    with app.connection_for_read() as connection:
        client = connection.default_channel.client
        while len(answers) < len(stages) and time.monotonic() - started < timeout:
            for stage, token in tokens.items():
                if stage not in answers and (raw := client.get(PONG_KEY.format(token=token))) is not None:
                    worker, _, problem = raw.decode().removeprefix(FAILING).partition(": ")
                    answers[stage] = StageHealth(stage, worker, time.monotonic() - started, problem or None)
            time.sleep(0.05)
    return [answers.get(stage, StageHealth(stage, None, None)) for stage in stages]


CONSUMER_KEY = "cubeqa:consumer:{queue}:{worker}"  # in the broker's Redis database, beside the queues
HEARTBEAT_SECONDS = 10
HEARTBEAT_TTL = 3 * HEARTBEAT_SECONDS  # a worker killed outright vanishes from the list within this


class Heartbeat:
    """A worker's presence on its queues: one key per queue, refreshed while the worker runs, deleted when it stops.

    Written only once the worker consumes (after its stages loaded), so a worker whose stage cannot load is never
    listed. It shows a live process, not proof of consumption: `probe_stages` is that.
    """

    def __init__(self, worker: str, queues: tuple[str, ...]) -> None:
        self.keys = [CONSUMER_KEY.format(queue=queue, worker=worker) for queue in queues]
        self.stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self.run, name="cubeqa-heartbeat", daemon=True).start()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                with app.connection_for_write() as connection:
                    client = connection.default_channel.client
                    for key in self.keys:
                        client.set(key, "1", ex=HEARTBEAT_TTL)
            except Exception:  # the broker is away: the keys expire, which is the truth
                log.debug("heartbeat not written", exc_info=True)
            self.stopped.wait(HEARTBEAT_SECONDS)

    def stop(self) -> None:
        self.stopped.set()
        try:
            with app.connection_for_write() as connection:
                connection.default_channel.client.delete(*self.keys)
        except Exception:  # they expire anyway
            log.debug("heartbeat keys not deleted", exc_info=True)


def live_workers(client: Any, queue: str) -> int:
    """Workers with a heartbeat on `queue` (client: a redis-py client on the broker's database)."""
    return sum(1 for _ in client.scan_iter(match=CONSUMER_KEY.format(queue=queue, worker="*"), count=1000))


def unserved_queues(stages: tuple[str, ...] = STAGES) -> dict[str, int]:
    """Stage queues no live worker consumes (no heartbeat): queue -> messages waiting in it."""
    with app.connection_for_read() as connection:
        client = connection.default_channel.client
        waiting = {stage: queue_length(client, stage) for stage in stages if not live_workers(client, stage)}
        return {stage: n for stage, n in waiting.items() if n or stage not in OPTIONAL_STAGES}
