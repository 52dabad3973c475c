"""Which errors are transient (database or broker unreachable): retried by tasks, reported by producers."""

from __future__ import annotations

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc

DATABASE_DOWN: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no free connection in the pool within its timeout
)
BROKER_DOWN: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,  # a socket refused before kombu wraps it
)
TRANSIENT: tuple[type[BaseException], ...] = DATABASE_DOWN + BROKER_DOWN


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same work later may succeed (the fault is in a service, not in the input)."""
    return isinstance(exc, TRANSIENT)
