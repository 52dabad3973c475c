"""Producer helpers: store a batch, send its micro-batches as encode|cube|decode chains, re-send stuck jobs."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import kombu.exceptions
from celery import Celery, chain
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.control import batch_stopped, orphaned_parks, park
from storage.hooks import Callback, overdue_deliveries
from storage.repository import (
    CreatedBatch,
    JobOutcome,
    NewJob,
    Pin,
    QueuedJob,
    chunks,
    create_batch,
    find_batch_by_key,
    jobs_of,
    mark_dispatched,
    record_outcomes,
    stale_jobs,
)
from tasks import hooks, stages
from tasks.app import HOOKS_QUEUE, STAGES
from tasks.errors import BROKER_DOWN
from tasks.priority import INTERACTIVE, Schedule, level_of
from tasks.wire import MicroBatch

WORDS = re.compile(r"\w+|[^\w\s]")


class BrokerUnavailable(Exception):
    """Jobs are stored in SQL but could not be sent; the reconciler will send them."""


@dataclass(frozen=True)
class Submission:
    batch_id: str
    created: bool  # False: the idempotency key named an existing batch, nothing was written or sent
    jobs: int
    sent: int
    job_ids: list[str] = field(default_factory=list)  # in input order


def first_message(batch_id: str, jobs: Sequence[QueuedJob], pin: Pin = Pin()) -> MicroBatch:
    """The message the encode stage receives for one micro-batch (its jobs share `pin`)."""
    return MicroBatch(
        batch=batch_id, jobs=[job.id for job in jobs], texts=[job.question for job in jobs], refs=[job.reference for job in jobs],
        bank=pin.bank, bank_version=pin.bank_version, min_confidence=pin.min_confidence, rerank=pin.rerank,
    )


def word_count(job: QueuedJob) -> int:
    """Words and punctuation marks of the question: a tokenizer-free proxy for its token count.

    Micro-batches of questions of similar length pad less in the encoder, which pads each batch to its
    longest (2,000 SQuAD questions in micro-batches of 64: 1.70 padded tokens per real token in input
    order, 1.26 sorted by this count); results are stored per job, so the order they are sent in is free.
    """
    return len(WORDS.findall(job.question))


def stage_chain(message: MicroBatch, level: int = INTERACTIVE) -> chain:
    """encode | cube | decode, and rerank when the jobs ask for it, each routed to its own queue at priority `level`."""
    rest = [stages.cube.s(), stages.decode.s(), *([stages.rerank.s()] if message.rerank else [])]
    return chain(*(task.set(priority=level) for task in (stages.encode.s(message.to_wire()), *rest)))


class Gate:
    """Whether a batch is paused or cancelled, read again at most every CHECK_EVERY seconds while it is sent."""

    CHECK_EVERY = 0.25  # seconds: a pause stops a long send within this, at one primary-key read per interval

    def __init__(self, sessions: sessionmaker[Session], batch_id: str, just_stored: bool) -> None:
        self.sessions = sessions
        self.batch_id = batch_id
        self.read_at = time.monotonic() if just_stored else -math.inf  # a batch stored a moment ago is not paused

    def closed(self) -> bool:
        if time.monotonic() - self.read_at < self.CHECK_EVERY:
            return False
        self.read_at = time.monotonic()
        with self.sessions() as session:
            return batch_stopped(session=session, batch_id=self.batch_id)


def hold(sessions: sessionmaker[Session], groups: Sequence[Sequence[QueuedJob]]) -> None:
    """Holds the unsent jobs of a paused batch (no-op for a cancelled one: its jobs are cancelled already)."""
    with sessions.begin() as session:
        park(session=session, job_ids=[job.id for group in groups for job in group])


def dispatch(
    sessions: sessionmaker[Session],
    jobs: Sequence[QueuedJob],
    micro_batch: int,
    on_sent: Callable[[int], None] | None = None,
    *,
    just_stored: bool = False,
    interactive: bool = False,
    schedule: Schedule = Schedule.FAIR,
) -> int:
    """Sends jobs (grouped by batch and pin) in micro-batches, then records every send in one transaction; returns jobs sent.

    Each micro-batch goes at the priority level `schedule` gives it (tasks.priority): level 0 when `interactive`,
    else by its place in its batch. A batch found paused (or cancelled) before a micro-batch is sent gets no more sends: its unsent jobs are held
    for its resume. `just_stored`: the caller stored the batches a moment ago, so the first read waits CHECK_EVERY.
    Raises BrokerUnavailable when the broker refuses; the jobs sent before are recorded, the rest stay queued in SQL.
    """
    sent: list[str] = []
    by_batch: dict[tuple[str, Pin], list[QueuedJob]] = {}
    for job in jobs:
        by_batch.setdefault((job.batch_id, job.pin), []).append(job)
    try:
        for (batch_id, pin), batch_jobs in by_batch.items():
            gate = Gate(sessions, batch_id, just_stored)
            groups = list(chunks(sorted(batch_jobs, key=word_count), micro_batch))
            for n, group in enumerate(groups):
                if gate.closed():
                    hold(sessions, groups[n:])
                    break
                try:
                    level = level_of(n, interactive=interactive, schedule=schedule)
                    stage_chain(first_message(batch_id, group, pin), level).apply_async()
                except BROKER_DOWN as exc:
                    raise BrokerUnavailable(
                        f"broker unreachable after {len(sent)} of {len(jobs)} jobs were sent ({exc}); the rest are stored "
                        "and `cubeqa reconcile` sends them"
                    ) from exc
                sent.extend(job.id for job in group)
                if on_sent:
                    on_sent(len(group))
    finally:
        if sent:
            with sessions.begin() as session:
                mark_dispatched(session=session, job_ids=sent)
    return len(sent)


def store(
    sessions: sessionmaker[Session], items: Sequence[NewJob], *, key: str | None, source: str | None, pin: Pin = Pin(),
    callback: Callback | None = None,
) -> CreatedBatch:
    """The batch and its jobs in one transaction; the existing batch when `key` names one (also after losing a race)."""
    try:
        with sessions.begin() as session:
            return create_batch(session=session, items=items, key=key, source=source, pin=pin, callback=callback)
    except IntegrityError:
        if key is None:
            raise
        with sessions() as session:  # a concurrent submission with the same key won the race
            existing = find_batch_by_key(session=session, key=key)
            if existing is None:
                raise
            return CreatedBatch(existing, False, jobs_of(session=session, batch_id=existing))


def submit(
    sessions: sessionmaker[Session],
    items: Sequence[NewJob],
    *,
    micro_batch: int,
    key: str | None = None,
    source: str | None = None,
    pin: Pin = Pin(),
    on_sent: Callable[[int], None] | None = None,
    callback: Callback | None = None,
    interactive: bool = False,
    schedule: Schedule = Schedule.FAIR,
) -> Submission:
    """Stores a batch (a no-op when `key` names an existing one) and sends its jobs, pinned to `pin`'s bank version,
    ahead of bulk work when `interactive` (a person waits for the answer).

    The caller resolves the bank name to its current version (`BankStore.resolve`) before calling: every job of
    the batch records that version, so a bank rebuilt while the batch runs never mixes versions in it. The caller
    also checks a `callback` URL (tasks.hooks.check_callback).
    """
    batch = store(sessions, items, key=key, source=source, pin=pin, callback=callback)
    if not batch.created:
        return Submission(batch.id, False, len(items), 0, batch.job_ids)
    sent = dispatch(sessions, batch.jobs, micro_batch, on_sent, just_stored=True, interactive=interactive, schedule=schedule)
    return Submission(batch.id, True, len(items), sent, batch.job_ids)


@dataclass(frozen=True)
class ReconcileReport:
    resent: int  # including jobs held by a batch no longer paused (a park that raced its resume)
    failed: int  # given up after max_attempts deliveries (since their last retry)
    hooks: int = 0  # webhook deliveries whose message was lost, sent again


def waiting_messages(app: Celery, queues: Sequence[str] = STAGES) -> int:
    """Messages waiting in the queues, the stage queues by default (not counting those a worker holds)."""
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        total = 0
        for queue in queues:
            try:
                total += channel.queue_declare(queue=queue, passive=True).message_count
            except kombu.exceptions.ChannelError:  # Redis drops an empty list: the queue does not exist while nothing waits
                pass
        return total


def reconcile(sessions: sessionmaker[Session], *, after: timedelta, max_attempts: int, micro_batch: int) -> ReconcileReport:
    """One pass: re-sends jobs that look lost (see `stale_jobs`); fails those delivered max_attempts times; sends
    again the webhook deliveries overdue by `after` while the hooks queue is empty (their message was lost, not
    waiting for a hooks worker: passes without one would pile up copies).

    Re-sending is safe because result writes are idempotent: whichever copy finishes first wins; a delivery's
    attempt is claimed in SQL, so a duplicate message posts nothing. Cancelled jobs are final and never stale; the
    jobs of a paused batch are held by `dispatch` instead of sent.
    """
    idle = waiting_messages(stages.encode.app) == 0
    hooks_idle = waiting_messages(stages.encode.app, (HOOKS_QUEUE,)) == 0
    with sessions.begin() as session:
        orphans = orphaned_parks(session=session)
    unparked = {job.id for job in orphans}
    with sessions() as session:
        found = stale_jobs(session=session, older_than=after, queues_idle=idle)
        overdue = overdue_deliveries(session=session, older_than=after) if hooks_idle else []
    stale = [(job, attempts) for job, attempts in found if job.id not in unparked]
    give_up = [job for job, attempts in stale if attempts >= max_attempts]
    retry = [job for job, attempts in stale if attempts < max_attempts]
    failed = 0
    if give_up:
        outcomes = [JobOutcome(job_id=job.id, error=f"gave up after {max_attempts} delivery attempts") for job in give_up]
        with sessions.begin() as session:
            recorded = record_outcomes(session=session, outcomes=outcomes, model_version=None)
        failed = recorded.finished
        hooks.send(recorded.hooks)
    resent = dispatch(sessions, retry + orphans, micro_batch) if retry or orphans else 0
    return ReconcileReport(resent=resent, failed=failed, hooks=hooks.send(overdue))
