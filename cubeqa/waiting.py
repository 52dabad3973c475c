"""Why a batch waits: jobs queued past CUBEQA_QUEUE_WAIT_WARN, and the stage queues no live worker consumes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from storage.repository import now, waiting_jobs
from storage.summary import as_utc
from tasks.errors import BROKER_DOWN


def why_waiting(seconds: float) -> str:
    """One line naming the stage queues no live worker consumes (the Celery app must be configured)."""
    from tasks.health import unserved_queues

    try:
        unserved = unserved_queues()
    except BROKER_DOWN as exc:
        return f"no progress for {seconds:.0f} s and the broker does not answer ({type(exc).__name__})"
    if unserved:
        return "; ".join(f"no live worker on queue {queue} for {seconds:.0f} s ({n} messages waiting)"
                         for queue, n in unserved.items())
    return (f"no progress for {seconds:.0f} s although every stage queue has a live worker: they are busy, "
            "or the messages were lost (`cubeqa reconcile` re-sends them)")


class Stall:
    """Notices a batch making no progress for `warn_after` seconds, and says so again every `warn_after` seconds."""

    def __init__(self, warn_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.warn_after = warn_after
        self.clock = clock
        self.progress: object = None
        self.since = self.warned = clock()

    def update(self, progress: object) -> float | None:
        """Seconds without progress when it is time to say why, else None."""
        moment = self.clock()
        if progress != self.progress:
            self.progress, self.since, self.warned = progress, moment, moment
            return None
        if moment - self.warned >= self.warn_after:
            self.warned = moment
            return moment - self.since
        return None


def queued_too_long(sessions: sessionmaker[Session], warn_after: int, batch_id: str | None = None) -> str | None:
    """How many jobs have waited queued past `warn_after` seconds, no worker taking them, and why (None: none)."""
    with sessions() as session:
        count, oldest = waiting_jobs(session=session, older_than=timedelta(seconds=warn_after), batch_id=batch_id)
    if not count or oldest is None:
        return None
    seconds = (now() - as_utc(oldest)).total_seconds()
    return f"{count} jobs queued longer than {warn_after} s with no worker taking them: {why_waiting(seconds)}"
