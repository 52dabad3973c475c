"""A consumption check: a ping task sent through each stage queue, answered in Redis by whichever worker ran it.

A worker process can be alive yet no longer consuming (e.g. after a broker reconnect); only a task that
went through the queue proves the stage works.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from tasks.app import STAGES, app

PONG_KEY = "cubeqa:pong:{token}"
PONG_TTL = 120


@app.task(name="cubeqa.ping", bind=True, acks_late=False)
def ping(self, token: str) -> None:
    """Writes this worker's name under the token, in the broker's Redis."""
    with self.app.connection_for_write() as connection:
        connection.default_channel.client.set(PONG_KEY.format(token=token), self.request.hostname or "?", ex=PONG_TTL)


@dataclass(frozen=True)
class StageHealth:
    stage: str
    worker: str | None  # who answered, None if nobody did in time
    seconds: float | None


def probe_stages(timeout: float = 10.0, stages: tuple[str, ...] = STAGES) -> list[StageHealth]:
    """Sends one ping through each stage queue and waits up to `timeout` seconds for the answers."""
    started = time.monotonic()
    tokens = {stage: uuid.uuid4().hex for stage in stages}
    for stage, token in tokens.items():
        ping.apply_async((token,), queue=stage, expires=timeout)
    answers: dict[str, StageHealth] = {}
    with app.connection_for_read() as connection:
        client = connection.default_channel.client
        while len(answers) < len(stages) and time.monotonic() - started < timeout:
            for stage, token in tokens.items():
                if stage not in answers and (worker := client.get(PONG_KEY.format(token=token))) is not None:
                    answers[stage] = StageHealth(stage, worker.decode(), time.monotonic() - started)
            time.sleep(0.05)
    return [answers.get(stage, StageHealth(stage, None, None)) for stage in stages]
