"""What the routes depend on: the app's services, a database session per request, the bearer-token check."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from storage.ids import AmbiguousId, resolve_id
from storage.models import Batch, Job
from storage.repository import Pin


@dataclass(frozen=True)
class Services:
    """Built once by `create_app` from settings; the routes see plain values only."""

    sessions: sessionmaker[Session]
    broker: redis.Redis
    registry: CollectorRegistry
    token: bytes | None
    micro_batch: int
    max_question_chars: int
    max_batch_items: int
    pin: Callable[[str | None, float | None], Pin]  # (bank name or None, threshold) -> pinned version; raises for an unknown bank


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """One session (and connection) for the request, closed after it."""
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
bearer = HTTPBearer(auto_error=False)


def authorised(services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """401 unless the request carries the configured bearer token (no token configured: open)."""
    if services.token is None:
        return
    given = credentials.credentials.encode() if credentials else b""
    if not hmac.compare_digest(given, services.token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


guarded = [Depends(authorised)]


def full_id(session: Session, model: type[Batch] | type[Job], given: str) -> str:
    """The id `given` names (the id or a unique prefix of 6+ characters); 404 when none, 400 listing the matches."""
    try:
        found = resolve_id(session=session, model=model, given=given)
    except AmbiguousId as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {model.__tablename__} {given!r}")
    return found
