"""Where a bank sentence comes from: its document, its position and its neighbours."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Provenance:
    """A sentence's document (id, title, source), its section path (the headings above it, outermost first; empty
    for unstructured text and for banks built before sections were kept), its 0-based position and its neighbours."""

    doc_id: str
    title: str | None = None
    source: str | None = None
    position: int = 0
    before: tuple[str, ...] = field(default=())  # up to N preceding sentences, nearest last
    after: tuple[str, ...] = field(default=())  # up to N following sentences, nearest first
    section: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id, "title": self.title, "source": self.source, "position": self.position,
            "before": list(self.before), "after": list(self.after), "section": list(self.section),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        return cls(
            doc_id=str(data["doc_id"]), title=data.get("title"), source=data.get("source"), position=int(data.get("position", 0)),
            before=tuple(data.get("before", ())), after=tuple(data.get("after", ())), section=tuple(data.get("section", ())),
        )
