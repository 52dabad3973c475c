"""A worker process's runtime: its stage models (loaded once per process, after fork under prefork) and its database sessions.

The worker edge builds one from settings and installs it; tasks fetch it with `current()`
and never see Settings.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, session_factory

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Lazily built, per-process state shared by the tasks of one worker process."""

    database_url: str
    loaders: dict[str, Callable[[], Any]]  # stage name -> builds that stage's model
    warm: tuple[str, ...] = ()  # stages to load in the background as soon as the process starts
    connections: int = 5  # pooled database connections: at least one per task running at once
    _models: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _engine: Engine | None = None
    _sessions: sessionmaker[Session] | None = None

    def stage(self, name: str) -> Any:
        """The stage's model, loaded on first use in this process and reused afterwards."""
        with self._lock:
            if name not in self._models:
                if name not in self.loaders:
                    raise LookupError(f"this worker does not serve the {name!r} stage")
                log.info("loading the %s stage model", name)
                self._models[name] = self.loaders[name]()
            return self._models[name]

    @property
    def sessions(self) -> sessionmaker[Session]:
        """Session factory on an engine created in this process (engines do not survive fork)."""
        with self._lock:
            if self._sessions is None:
                self._engine = make_engine(self.database_url, self.connections)
                self._sessions = session_factory(self._engine)
            return self._sessions

    def after_fork(self) -> None:
        """In a fresh child: forget the parent's engine and start loading the served stages."""
        self._engine = None
        self._sessions = None
        self._lock = threading.Lock()
        self.start()

    def start(self) -> None:
        """Starts loading the served stages in the background (the first task waits for its stage)."""
        if self.warm:
            threading.Thread(target=self.warm_up, name="cubeqa-warm-up", daemon=True).start()

    def warm_up(self) -> None:
        for name in self.warm:
            try:
                self.stage(name)
            except Exception:  # the first task will raise the same error where it is reported
                log.exception("warm-up of the %s stage failed", name)


_installed: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Makes `runtime` the one the tasks of this process use."""
    global _installed
    _installed = runtime


def current() -> Runtime:
    if _installed is None:
        raise RuntimeError("no worker runtime installed: start workers with `cubeqa worker`")
    return _installed
