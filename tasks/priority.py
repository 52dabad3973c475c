"""Which message a worker takes first: interactive jobs before bulk work, and bulk batches sharing the workers.

kombu's Redis transport keeps one list per priority level for each queue and a worker pops the lowest level that
holds a message, across all the queues it consumes. Interactive jobs, health round trips and webhook deliveries go
at level 0. A bulk batch's k-th micro-batch (and a bank build's k-th corpus chunk) goes at 1 + floor(log2(k + 1)),
capped at 9: every time a batch has had twice as much sent, its messages drop one level, so a batch submitted later
starts ahead of an earlier one's tail and the two then alternate level by level instead of running one after the
other (least service first). Each level is first come, first served; a job's later stages keep its level.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from kombu.transport.redis import Channel

LEVELS = tuple(range(10))  # the transport's priority_steps: one Redis list per level and queue
INTERACTIVE = 0  # also the level of any message sent without one


class Schedule(StrEnum):
    """How the producer orders work: `fair` as above; `fifo` sends everything at one level (first come, first
    served, as before priorities; bench/priorities.py measures one against the other)."""

    FAIR = "fair"
    FIFO = "fifo"


def bulk_level(index: int) -> int:
    """The level of a bulk batch's `index`-th message (0-based): 1, then one lower each time the count doubles."""
    return min(LEVELS[-1], (index + 1).bit_length())


def level_of(index: int, *, interactive: bool, schedule: Schedule = Schedule.FAIR) -> int:
    """The level of a producer's `index`-th message of a batch under `schedule`."""
    if schedule is Schedule.FIFO or interactive:
        return INTERACTIVE
    return bulk_level(index)


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold `queue`'s waiting messages, one per level (kombu's naming: the bare name for 0)."""
    return [queue if level == 0 else f"{queue}{Channel.sep}{level}" for level in LEVELS]


def queue_length(client: Any, queue: str) -> int:
    """Messages waiting in `queue` at every level (client: a redis-py client on the broker's database)."""
    return sum(int(client.llen(key)) for key in queue_keys(queue))
