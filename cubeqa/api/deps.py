"""What the routes depend on: the app's services, a database session per request, the token check."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from storage.ids import AmbiguousId, resolve_id
from storage.models import Batch, Job
from storage.repository import Pin
from tasks.hooks import HookPolicy


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
    # (bank name or None, threshold) -> pinned version; raises for an unknown bank
    pin: Callable[[str | None, float | None, bool | None], Pin]
    stages: tuple[str, ...] = ("encode", "cube", "decode")  # the stages the bundle runs (`/healthz` pings each)
    hooks: HookPolicy = HookPolicy()  # the callback URLs accepted


def get_services(request: Request) -> Services:
    """The app's services (create_app puts them in its state)."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """One session (and connection) for the request, closed after it."""
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
COOKIE = "cubeqa_dashboard"  # the dashboard's login session
bearer = HTTPBearer(auto_error=False)
login_cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="the dashboard's login session")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
CookieDep = Annotated[str | None, Depends(login_cookie)]


def session_value(token: bytes) -> bytes:
    """The login cookie's value: derived from the token, so stealing the cookie does not reveal the token."""
    return hmac.new(token, b"cubeqa-dashboard-session", hashlib.sha256).hexdigest().encode()


def authorised(services: ServicesDep, credentials: BearerDep, cookie: CookieDep) -> None:
    """401 unless the request carries the configured token as a bearer token or the dashboard's login cookie
    (no token configured: open)."""
    if services.token is None:
        return
    given = credentials.credentials.encode() if credentials else b""
    session = (cookie or "").encode()
    if not (hmac.compare_digest(given, services.token) or hmac.compare_digest(session, session_value(services.token))):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or invalid token", headers={"WWW-Authenticate": "Bearer"}
        )


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
