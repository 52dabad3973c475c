"""The three stage tasks. Each is a thin wrapper around one `pipeline.stages` method.

A micro-batch travels as one msgpack payload through encode -> cube -> decode; the
decode task writes every job's outcome to SQL in one idempotent transaction. An
item whose input makes a stage raise fails alone; transient faults (database,
broker) retry the whole task with exponential backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import kombu.exceptions
import numpy as np
import redis.exceptions
import sqlalchemy.exc

from pipeline import CubeQAError
from storage.repository import JobOutcome, mark_running, record_outcomes
from tasks import runtime
from tasks.app import TASK_NAMES, app
from tasks.wire import pack, unpack

TRANSIENT: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no free connection in the pool within its timeout
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)
RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 12,
}
ERROR_CHARS = 500


def describe(exc: BaseException) -> str:
    """A stored, user-facing error: the message of our typed errors, type and message otherwise."""
    text = str(exc) if isinstance(exc, CubeQAError) else f"{type(exc).__name__}: {exc}"
    return text[:ERROR_CHARS]


def isolate(fn: Callable[[list[Any]], Sequence[Any]], items: list[Any]) -> tuple[list[Any], dict[int, str]]:
    """Runs `fn` over all items at once; if that raises (not transiently), runs each item alone
    so that only the items that raise fail. Returns per-item results (None where failed) and errors."""
    try:
        return list(fn(items)), {}
    except TRANSIENT:
        raise
    except Exception as exc:  # noqa: BLE001 - any error of one input must not sink the micro-batch
        if len(items) == 1:
            return [None], {0: describe(exc)}
    results: list[Any] = []
    errors: dict[int, str] = {}
    for i, item in enumerate(items):
        try:
            results.append(fn([item])[0])
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001
            results.append(None)
            errors[i] = describe(exc)
    return results, errors


def drop_failed(payload: dict[str, Any], errors: dict[int, str], keep: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Moves failed items into payload["failed"] and filters the per-item lists in `keep` to the survivors."""
    for i, error in errors.items():
        payload["failed"].append([payload["jobs"][i], error])
    alive = [i for i in range(len(payload["jobs"])) if i not in errors]
    payload["jobs"] = [payload["jobs"][i] for i in alive]
    return {name: [values[i] for i in alive] for name, values in keep.items()}


def in_background(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Runs fn(*args) in its own thread, so a SQL round trip overlaps the model's work; `.result()` joins it
    and re-raises its error (marking jobs running is a round trip and a commit on PostgreSQL)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cubeqa-sql")
    future = executor.submit(fn, *args)
    executor.shutdown(wait=False)
    return future


def stamp(payload: dict[str, Any], stage: str, hostname: str, version: str, started: float, n: int) -> None:
    """Records this stage's host, model version, per-item compute time and the queue wait before it."""
    finished = time.time()
    payload["hosts"][stage] = hostname
    payload["versions"][stage] = version
    payload["timings"][stage] = 1000 * (finished - started) / max(1, n)
    payload["timings"][f"wait_{stage}"] = 1000 * max(0.0, started - payload["handed_at"])
    payload["handed_at"] = finished


@app.task(name=TASK_NAMES["encode"], bind=True, acks_late=True, **RETRY)
def encode(self, payload: dict[str, Any]) -> dict[str, Any]:
    """Questions (and references) to unit vectors; marks the jobs running (one more attempt)."""
    started = time.time()
    rt = runtime.current()
    stage = rt.stage("encode")
    marking = in_background(mark_running, rt.sessions, payload["jobs"] + [job for job, _ in payload["failed"]])
    n = len(payload["jobs"])
    items = list(zip(payload["texts"], payload["refs"]))

    def run(batch: list[tuple[str, str | None]]) -> list[tuple[np.ndarray, bool, np.ndarray | None]]:
        questions = stage.encode([q for q, _ in batch])
        with_refs = [r for _, r in batch if r is not None]
        refs = iter(stage.encode(with_refs).vectors) if with_refs else iter(())
        return [
            (questions.vectors[i], bool(questions.truncated[i]), next(refs) if r is not None else None)
            for i, (_, r) in enumerate(batch)
        ]

    try:
        results, errors = isolate(run, items)
    finally:
        marked = marking.exception()  # joined either way: no write outlives its task
    if marked is not None:
        raise marked  # the jobs are marked running before their vectors move on; a transient error retries the task
    kept = drop_failed(payload, errors, {"results": results, "texts": payload["texts"]})
    ok = kept["results"]
    dim = int(ok[0][0].shape[0]) if ok else 0
    payload.update(
        dim=dim,
        q=pack(np.stack([q for q, _, _ in ok])) if ok else b"",
        truncated=[cut for _, cut, _ in ok],
        has_ref=[r is not None for _, _, r in ok],
        r=pack(np.stack([r for _, _, r in ok if r is not None])) if any(r is not None for _, _, r in ok) else b"",
    )
    del payload["texts"], payload["refs"]
    stamp(payload, "encode", self.request.hostname or "", stage.model_version, started, n)
    return payload


@app.task(name=TASK_NAMES["cube"], bind=True, acks_late=True, **RETRY)
def cube(self, payload: dict[str, Any]) -> dict[str, Any]:
    """Question vectors to answer vectors through the lattice."""
    started = time.time()
    stage = runtime.current().stage("cube")
    n = len(payload["jobs"])
    if n:
        questions = unpack(payload["q"], payload["dim"])
        results, errors = isolate(lambda rows: list(stage.map(np.stack(rows))), list(questions))
        kept = drop_failed(payload, errors, {"a": results, "q": list(questions), "truncated": payload["truncated"], "r": refs_by_row(payload)})
        payload.update(
            q=pack(np.stack(kept["q"])) if kept["q"] else b"",
            a=pack(np.stack(kept["a"])) if kept["a"] else b"",
            truncated=kept["truncated"],
            **pack_refs(kept["r"]),
        )
    else:
        payload["a"] = b""
    stamp(payload, "cube", self.request.hostname or "", stage.model_version, started, n)
    return payload


@app.task(name=TASK_NAMES["decode"], bind=True, acks_late=True, **RETRY)
def decode(self, payload: dict[str, Any]) -> dict[str, int]:
    """Answer vectors to text, per-item quality metrics, and one idempotent SQL write of every outcome."""
    started = time.time()
    rt = runtime.current()
    stage = rt.stage("decode")
    n = len(payload["jobs"])
    answers: list[Any] = []
    if n:
        rows = list(zip(unpack(payload["q"], payload["dim"]), unpack(payload["a"], payload["dim"]), refs_by_row(payload)))

        def run(batch: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> list[tuple[Any, dict[str, float]]]:
            questions = np.stack([q for q, _, _ in batch])
            outputs = np.stack([a for _, a, _ in batch])
            decoded = stage.decode(outputs)
            return list(zip(decoded, stage.score(questions, outputs, decoded, [r for _, _, r in batch])))

        answers, errors = isolate(run, rows)
        kept = drop_failed(payload, errors, {"answers": answers, "truncated": payload["truncated"]})
        answers, truncated = kept["answers"], kept["truncated"]
    stamp(payload, "decode", self.request.hostname or "", stage.model_version, started, n)
    timings = {name: round(value, 3) for name, value in payload["timings"].items()}
    outcomes = [
        JobOutcome(
            job_id=job_id,
            answer=answer.text,
            decoder_path=answer.path,
            score=answer.score,
            metrics=metrics | ({"truncated": 1.0} if cut else {}),
            timings_ms=timings,
            hosts=dict(payload["hosts"]),
        )
        for job_id, (answer, metrics), cut in zip(payload["jobs"], answers, truncated if n else [])
    ]
    outcomes += [JobOutcome(job_id=job_id, error=error, hosts=dict(payload["hosts"])) for job_id, error in payload["failed"]]
    versions = sorted(set(payload["versions"].values()))
    finished = record_outcomes(rt.sessions, outcomes, versions[0] if len(versions) == 1 else " | ".join(versions))
    return {"jobs": len(outcomes), "finished": finished}


def refs_by_row(payload: dict[str, Any]) -> list[np.ndarray | None]:
    """Reference vectors aligned with the live rows (None where a job has no reference)."""
    refs = iter(unpack(payload["r"], payload["dim"])) if payload.get("r") else iter(())
    return [next(refs) if has else None for has in payload["has_ref"]]


def pack_refs(refs: list[np.ndarray | None]) -> dict[str, Any]:
    present = [r for r in refs if r is not None]
    return {"has_ref": [r is not None for r in refs], "r": pack(np.stack(present)) if present else b""}
