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
    warm: tuple[str, ...] = ()  # stages to load before consuming (`load_all`), or in the background at start (`start`)
    connections: int = 5  # pooled database connections: at least one per task running at once
    on_failure: Callable[[str], None] | None = None  # told why, when a background warm-up fails (prefork children)
    failed: dict[str, str] = field(default_factory=dict)  # stage -> why it cannot load: its tasks are refused
    _models: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _engine: Engine | None = None
    _sessions: sessionmaker[Session] | None = None

    def stage(self, name: str) -> Any:
        """The stage's model, loaded on first use in this process and reused afterwards."""
        with self._lock:
            if name in self.failed:
                raise StageUnavailable(self.failed[name])
            if name not in self._models:
                if name not in self.loaders:
                    raise LookupError(f"this worker does not serve the {name!r} stage")
                log.info("loading the %s stage model", name)
                try:
                    self._models[name] = self.loaders[name]()
                except Exception as exc:  # any loader error: the model files, the device, the bank root
                    self.failed[name] = f"the {name} stage cannot load: {type(exc).__name__}: {exc}"
                    raise StageUnavailable(self.failed[name]) from exc
            return self._models[name]

    def load_all(self) -> None:
        """Loads every served stage now, in this thread; raises StageUnavailable (why) for one that cannot load."""
        for name in self.warm:
            self.stage(name)

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
        try:
            self.load_all()
        except StageUnavailable as exc:  # tasks of the stage are refused from now on; the worker is told to stop
            log.error("%s", exc, exc_info=exc.__cause__)
            if self.on_failure is not None:
                self.on_failure(str(exc))


class StageUnavailable(RuntimeError):
    """A stage's model failed to load in this process: its tasks go back to the queue for a worker that can serve."""


_installed: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Makes `runtime` the one the tasks of this process use."""
    global _installed
    _installed = runtime


def current() -> Runtime:
    if _installed is None:
        raise RuntimeError("no worker runtime installed: start workers with `cubeqa worker`")
    return _installed
