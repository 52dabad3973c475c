"""`cubeqa ask --api`: questions answered by a running `cubeqa api` and its workers, whose models stay loaded, read
back as the same AnswerResult a local `ask` prints."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from cubeqa.api.schemas import JobPublic
from cubeqa.client import Client, ClientError
from pipeline.answer_result import AnswerResult

WAIT = 30.0  # seconds the API holds each request for its answer
IN_FLIGHT = 8  # questions of a list waiting on the API at once


class RemoteError(Exception):
    """The API could not be reached, refused a question, or did not answer it in time."""


def answer_of(job: JobPublic) -> AnswerResult:
    """A final job as the AnswerResult a local `ask` prints: the answer, its evidence's sentence and alternatives as the
    candidates, the stored metrics (the truncation flag read back as `truncated`)."""
    evidence: dict[str, Any] = job.evidence or {}
    ranked = [evidence, *evidence.get("alternatives", [])] if evidence else []
    metrics = {name: float(value) for name, value in job.metrics.items()
               if name != "truncated" and isinstance(value, int | float) and not isinstance(value, bool)}
    return AnswerResult(
        question=job.question, answer=job.answer or "", path=job.decoder_path or "none", score=job.score or 0.0,
        candidates=tuple((c["sentence"], float(c["score"])) for c in ranked), truncated=bool(job.metrics.get("truncated")),
        timings_ms=dict(job.timings_ms), metrics=metrics, confidence=job.confidence, evidence=job.evidence,
    )


def ask_api(client: Client, questions: Iterable[str], *, reference: str | None = None, bank: str | None = None,
            min_confidence: float | None = None, rerank: bool | None = None) -> Iterator[AnswerResult]:
    """Each question sent as one job (the API waits for its answer), answers in question order; a list is sent
    IN_FLIGHT at a time (the workers batch what arrives together), a prompt's questions one by one. RemoteError
    names what went wrong."""

    def one(question: str) -> AnswerResult:
        return asked(client, question, reference, bank, min_confidence, rerank)

    if isinstance(questions, list) and len(questions) > 1:
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            yield from pool.map(one, questions)
    else:
        yield from map(one, questions)


def asked(client: Client, question: str, reference: str | None, bank: str | None, min_confidence: float | None,
          rerank: bool | None) -> AnswerResult:
    """One question's final answer from the API, or RemoteError."""
    try:
        job = client.ask(question, reference=reference, bank=bank, min_confidence=min_confidence, rerank=rerank,
                         wait=WAIT)
    except ClientError as exc:
        raise RemoteError(f"the API refused {question!r}: {exc}") from exc
    except httpx.TransportError as exc:
        raise RemoteError(f"no cubeqa API answers at {client.http.base_url} ({exc}); start one with `cubeqa api`, "
                          f"or drop --api / CUBEQA_API_URL to answer in this process") from exc
    if job.status == "failed":
        raise RemoteError(f"job {job.id} failed: {job.error}")
    if job.status == "cancelled":
        raise RemoteError(f"job {job.id} was cancelled")
    if job.status != "done":
        raise RemoteError(f"job {job.id} is still {job.status} after {WAIT:.0f} s: are the workers running? "
                          f"(`cubeqa health`; GET /v1/jobs/{job.id[:8]} shows it later)")
    return answer_of(job)
