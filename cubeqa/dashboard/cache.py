"""What the pages show of finished batches, read once per API process: a batch whose every job is final
no longer changes, so a 100,000-job batch costs its SQL passes on the first view only. Running batches are
read again on every request."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from storage import dashboard_queries as q

View = TypeVar("View")


class FinishedBatches(Generic[View]):
    """Rows (counts, versions) of up to `rows` finished batches and the figures of up to `figures` of them."""

    def __init__(self, compute: Callable[[Session, q.BatchRow], View], rows: int = 1024, figures: int = 32) -> None:
        self.compute = compute
        self.sizes = {"rows": rows, "figures": figures}
        self.rows: OrderedDict[str, q.BatchRow] = OrderedDict()
        self.figures: OrderedDict[tuple[str, str], View] = OrderedDict()
        self.lock = threading.Lock()

    def batch_rows(self, session: Session, **query: Any) -> list[q.BatchRow]:
        """q.batch_rows, scanning only the batches not finished when last read."""
        with self.lock:
            known = dict(self.rows)
        rows = q.batch_rows(session, known=known, **query)
        with self.lock:
            for row in rows:
                if row.finished_at is not None and not row.running:
                    self._keep(self.rows, row.id, row, self.sizes["rows"])
        return rows

    def batch_figures(self, session: Session, row: q.BatchRow) -> View:
        """compute(session, row), once per finished batch."""
        if row.running or row.finished_at is None:
            return self.compute(session, row)
        key = (row.id, row.finished_at.isoformat())
        with self.lock:
            if key in self.figures:
                self.figures.move_to_end(key)
                return self.figures[key]
        figures = self.compute(session, row)
        with self.lock:
            self._keep(self.figures, key, figures, self.sizes["figures"])
        return figures

    @staticmethod
    def _keep(store: OrderedDict[Any, Any], key: Any, value: Any, size: int) -> None:
        """Puts key -> value in `store` as its newest entry, dropping the oldest beyond `size`."""
        store[key] = value
        store.move_to_end(key)
        while len(store) > size:
            store.popitem(last=False)
