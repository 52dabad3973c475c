"""The stage message: one typed micro-batch, sent as a msgpack map; vectors as raw float32 bytes."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

VERSION = 1  # bump when a field changes meaning; workers refuse versions they do not know
MAX_MICRO_BATCH = 1024  # jobs one stage task carries at most


class WireError(ValueError):
    """A stage message this worker cannot read (unknown version, missing or unknown fields)."""


def pack(vectors: np.ndarray) -> bytes:
    """(N, D) float array -> N*D*4 bytes."""
    return np.ascontiguousarray(vectors, dtype="<f4").tobytes()


def unpack(data: bytes, dim: int) -> np.ndarray:
    """Inverse of `pack`: bytes -> (N, dim) float32 (a writable copy)."""
    if dim <= 0 or len(data) % (4 * dim):
        raise ValueError(f"{len(data)} bytes are not a whole number of {dim}-D float32 vectors")
    return np.frombuffer(data, dtype="<f4").reshape(-1, dim).astype(np.float32)


@dataclass
class MicroBatch:
    """Jobs of one batch travelling encode -> cube -> decode (-> rerank); each stage fills its part and stamps itself.

    `jobs` are the live jobs (a job whose input makes a stage raise moves to `failed`); per-job lists and
    the packed vectors (`q` the teacher's question vectors, `tower` the cube's inputs when the bundle has a
    question tower, `a` answers, `r` references of the rows whose `has_ref` is set) are aligned with `jobs`.
    With a tower, `q` is computed only for rows with a reference (the identity metrics need it) and is zero
    for the others.
    """

    batch: str
    jobs: list[str]
    texts: list[str] = field(default_factory=list)  # questions: encoded, then read by decode's lexical search
    refs: list[str | None] = field(default_factory=list)  # reference answers, until encoded
    failed: list[list[str]] = field(default_factory=list)  # [job id, error]
    timings: dict[str, float] = field(default_factory=dict)  # stage -> ms per item; wait_<stage> -> ms queued
    hosts: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # stage -> model version that ran it
    handed_at: float = field(default_factory=time.time)  # when the previous stage (or the producer) let go
    dim: int = 0
    q: bytes = b""
    tower: bytes = b""  # the question tower's vectors, the cube's input (empty: the cube takes q); dropped after the cube
    a: bytes = b""
    r: bytes = b""
    truncated: list[bool] = field(default_factory=list)
    has_ref: list[bool] = field(default_factory=list)
    bank: str | None = None  # knowledge bank to decode against (None: the bundle's)
    bank_version: str | None = None
    min_confidence: float | None = None  # below it an answer becomes "no confident answer" (None: the worker's setting)
    rerank: bool = False  # the chain ends with the rerank stage: decode retrieves, rerank answers and writes
    depth: int = 0  # candidates per job in `hit_rows` / `hit_scores` (decode -> rerank)
    hit_rows: bytes = b""  # (N, depth) int64 bank rows of the fused candidates, -1 pads a short list
    hit_scores: bytes = b""  # (N, depth, 4) float64 (exact: the reranker's splits must see what in-process sees):
    # fused, dense, lexical, overlap (NaN: no lexical side)
    version: int = VERSION

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-ready map (str, int, float, bytes, lists and maps only)."""
        return asdict(self)

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> MicroBatch:
        """Reads a message; refuses an unknown version or fields. Messages sent before `version`
        existed carry today's fields and are read as version 1."""
        version = message.get("version", 1)
        if version != VERSION:
            raise WireError(f"stage message version {version!r} is unknown to this worker (it reads {VERSION}): upgrade the workers")
        return checked_fields(cls, message, WireError, "stage message")

    def drop_failed(self, errors: dict[int, str], keep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Moves failed rows into `failed` and filters the per-row lists in `keep` to the survivors."""
        self.failed.extend([self.jobs[i], error] for i, error in errors.items())
        alive = [i for i in range(len(self.jobs)) if i not in errors]
        self.jobs = [self.jobs[i] for i in alive]
        return {name: [values[i] for i in alive] for name, values in keep.items()}

    def drop_jobs(self, gone: Collection[str]) -> None:
        """Removes these jobs (cancelled, or held by a pause) with every row of theirs: texts, references, flags,
        vectors and candidates; a removed job gets no outcome from this message."""
        n = len(self.jobs)
        alive = [i for i, job in enumerate(self.jobs) if job not in gone]
        if len(self.r):
            refs = self.refs_by_row()
            present = [ref for i in alive if (ref := refs[i]) is not None]
            self.r = pack(np.stack(present)) if present else b""
        for name in ("texts", "refs", "truncated", "has_ref"):
            values = getattr(self, name)
            if len(values) == n:
                setattr(self, name, [values[i] for i in alive])
        for name, width in (("q", 4 * self.dim), ("tower", 4 * self.dim), ("a", 4 * self.dim),
                            ("hit_rows", 8 * self.depth), ("hit_scores", 32 * self.depth)):
            data = getattr(self, name)
            if data and width:
                setattr(self, name, b"".join(data[i * width : (i + 1) * width] for i in alive))
        self.jobs = [self.jobs[i] for i in alive]
        self.failed = [entry for entry in self.failed if entry[0] not in gone]

    def question_texts(self) -> list[str]:
        """The live jobs' questions; empty strings for a message encoded before the questions travelled past encode
        (whose decode then searches dense-only)."""
        return self.texts if len(self.texts) == len(self.jobs) else [""] * len(self.jobs)

    def refs_by_row(self) -> list[np.ndarray | None]:
        """Reference vectors aligned with the live rows (None where a job has no reference)."""
        refs = iter(unpack(self.r, self.dim)) if self.r else iter(())
        return [next(refs) if has else None for has in self.has_ref]

    def set_refs(self, refs: list[np.ndarray | None]) -> None:
        present = [r for r in refs if r is not None]
        self.has_ref = [r is not None for r in refs]
        self.r = pack(np.stack(present)) if present else b""

    def set_hits(self, rows: np.ndarray, scores: np.ndarray) -> None:
        """The decode stage's candidates for the rerank stage: rows (N, k) and their four scores (N, k, 4)."""
        self.depth = int(rows.shape[1])
        self.hit_rows = np.ascontiguousarray(rows, dtype="<i8").tobytes()
        self.hit_scores = np.ascontiguousarray(scores, dtype="<f8").tobytes()

    def hits(self) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of `set_hits`: rows (N, k) int64 and scores (N, k, 4) float64, aligned with the live jobs."""
        if self.depth <= 0:
            raise WireError("the rerank stage got no candidates: the decode stage that sent this message retrieved none")
        rows = np.frombuffer(self.hit_rows, dtype="<i8").reshape(-1, self.depth).astype(np.int64)
        scores = np.frombuffer(self.hit_scores, dtype="<f8").reshape(-1, self.depth, 4).astype(np.float64)
        if len(rows) != len(self.jobs) or len(scores) != len(self.jobs):
            raise WireError(f"{len(rows)} candidate lists for {len(self.jobs)} jobs")
        return rows, scores

    def stamp(self, stage: str, hostname: str, model_version: str, started: float, n: int) -> None:
        """Records this stage's host, model version, per-item compute time and the queue wait before it."""
        finished = time.time()
        self.hosts[stage] = hostname
        self.versions[stage] = model_version
        self.timings[stage] = 1000 * (finished - started) / max(1, n)
        self.timings[f"wait_{stage}"] = 1000 * max(0.0, started - self.handed_at)
        self.handed_at = finished


def checked_fields(cls: type[T], message: dict[str, Any], error: type[Exception], what: str) -> T:
    """`cls(**message)` for a message dataclass, refusing unknown or missing fields with `error` naming `what`."""
    unknown = sorted(set(message) - {f.name for f in fields(cls)})
    if unknown:
        raise error(f"{what} has unknown fields {unknown}")
    try:
        return cls(**message)
    except TypeError as exc:
        raise error(f"{what} is incomplete: {exc}") from exc
