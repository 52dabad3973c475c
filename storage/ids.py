"""Ids as people type them: the full 32-character id, or a unique prefix of at least six characters."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ID_LENGTH, Batch, Job, is_id

MIN_PREFIX = 6  # the dashboard shows 12; six hex characters tell apart a million ids with few collisions
SHOWN = 5  # matches listed when a prefix is ambiguous


class AmbiguousId(LookupError):
    """A prefix that matches more than one id; the message lists some of them."""


def resolve_id(*, session: Session, model: type[Batch] | type[Job], given: str) -> str | None:
    """The full id that `given` names (itself, or the one id it prefixes), None when it names none."""
    given = given.strip().lower()
    if is_id(given):
        return given
    if not MIN_PREFIX <= len(given) < ID_LENGTH or not all(c in "0123456789abcdef" for c in given):
        return None
    column = model.id
    # A range, not only LIKE: every id starting with the prefix lies in [prefix, prefix + "g"), and a btree can seek it.
    found = session.scalars(
        select(column).where(column >= given, column < given + "g", column.like(f"{given}%")).order_by(column).limit(SHOWN + 1)
    ).all()
    if len(found) > 1:
        more = ", …" if len(found) > SHOWN else ""
        raise AmbiguousId(f"{given!r} is the start of several {model.__tablename__} ids: {', '.join(found[:SHOWN])}{more}")
    return found[0] if found else None
