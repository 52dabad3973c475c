"""Engine and session factory: SQLite in WAL mode by default, PostgreSQL by URL; schema checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class StorageError(Exception):
    """The store is unusable as configured (bad URL, schema not at the current revision)."""


def make_engine(url: str, connections: int = 5) -> Engine:
    """An engine for `url` keeping up to `connections` pooled (10 more on demand); SQLite gets WAL, a busy
    timeout and foreign keys on every connection."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError and others for junk URLs
        # Never the URL itself: it may hold a password, and unparsed it cannot be masked.
        raise StorageError(f"invalid database URL: {exc}") from exc
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, pool_size=connections, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(parsed, pool_pre_ping=True, pool_size=connections)
    except Exception as exc:  # unknown dialect, driver not installed
        raise StorageError(
            f"unusable database URL {parsed.render_as_string(hide_password=True)}: {exc}; "
            "use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB"
        ) from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (results are read after the transaction)."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    """Alembic configuration for the migrations shipped in this package, aimed at `url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Brings the schema at `url` to `revision` (creating the SQLite file if needed)."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest migration this code ships."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def check_schema(engine: Engine) -> None:
    """Refuses a database whose schema is not at this code's revision, saying what to run."""
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except Exception as exc:  # driver errors differ per backend; the message names the URL
        raise StorageError(f"cannot open database {engine.url.render_as_string(hide_password=True)}: {exc}") from exc
    head = head_revision()
    if current != head:
        raise StorageError(
            f"database {engine.url.render_as_string(hide_password=True)} is at schema revision {current or 'none'}, "
            f"this code needs {head}: run `cubeqa db upgrade`"
        )
