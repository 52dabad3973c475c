"""A Python client of the cubeqa HTTP API, on httpx: submit, wait, stream results; typed by the API's own schemas.

    with Client("http://127.0.0.1:8000", token=...) as api:
        job = api.ask("Where is kenya located?")                     # JobPublic
        accepted = api.submit(["Who designed it?", {"question": "When?", "reference": "In 1889.",
                                                     "alt_answers": ["It opened in 1889."]}])
        summary = api.wait(accepted.batch_id, progress=print)         # BatchPublic, once every job is final
        for row in api.results(accepted.batch_id): ...                 # JobPublic per job, in input order
        build = api.build_bank("manuals", ["docs/"], progress=print)   # BankBuild, once the bank is built
        api.pause(batch_id); api.resume(batch_id); api.cancel(batch_id)  # Controlled: what it did, the batch after
        api.retry(batch_id, refused=True)                              # new attempts of failed and refused jobs

`AsyncClient` has the same methods as coroutines (`results` an async iterator). Requests are built and responses
read by the functions below, shared by both, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from cubeqa.api.bank_schemas import UPLOAD_SUFFIXES, BankBuild, BankDetail, BankList
from cubeqa.api.schemas import Accepted, BatchList, BatchPublic, Controlled, JobPublic, WebhookDeliveryPublic

Model = TypeVar("Model", bound=BaseModel)
Item = str | Mapping[str, Any]  # a question, or {"question": ..., "reference": ..., "alt_answers": [...]}
Progress = Callable[[BatchPublic], None]
WAIT_SLACK = 10.0  # seconds the HTTP timeout adds to a server-side wait


class ClientError(Exception):
    """The API refused a request: the HTTP status and the server's own explanation."""

    def __init__(self, status: int, detail: object) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _job_body(question: str, reference: str | None, bank: str | None, min_confidence: float | None,
              rerank: bool | None = None, callback: str | None = None,
              alt_answers: Iterable[str] | None = None) -> dict[str, Any]:
    body = {"question": question, "reference": reference, "bank": bank, "min_confidence": min_confidence, "rerank": rerank,
            "callback_url": callback, "alt_answers": None if alt_answers is None else list(alt_answers)}
    return {k: v for k, v in body.items() if v is not None}


def _batch_body(items: Iterable[Item], bank: str | None, min_confidence: float | None, key: str | None,
                micro_batch: int | None, rerank: bool | None = None, callback: str | None = None) -> dict[str, Any]:
    listed = [{"question": item} if isinstance(item, str) else dict(item) for item in items]
    body = {"items": listed, "bank": bank, "min_confidence": min_confidence, "key": key, "micro_batch": micro_batch,
            "rerank": rerank, "callback_url": callback}
    return {k: v for k, v in body.items() if v is not None}


class BankBuildFailed(Exception):
    """A bank build ended failed: its record, with the reason in `build.error`."""

    def __init__(self, build: BankBuild) -> None:
        super().__init__(f"build {build.id} of bank {build.bank} failed: {build.error}")
        self.build = build


def _uploads(paths: Iterable[str | Path]) -> list[tuple[str, tuple[str, bytes]]]:
    """Multipart files: each file under its own name, and a folder's supported files (recursively, hidden ones
    skipped); names must differ, as the server keeps no folders."""
    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            files += [p for p in sorted(given.rglob("*")) if p.is_file() and p.suffix.lower() in UPLOAD_SUFFIXES
                      and not any(part.startswith(".") for part in p.relative_to(given).parts)]
        else:
            files.append(given)
    names = [p.name for p in files]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"files of the same name cannot go into one build: {', '.join(twice)}")
    return [("files", (p.name, p.read_bytes())) for p in files]


def _build_params(add: bool, replace: bool, index: str | None, split: bool, skip_bad: bool) -> dict[str, Any]:
    params = {"add": add, "replace": replace, "index": index, "split": split, "skip_bad": skip_bad}
    return {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items() if v is not None}


def _finished(build: BankBuild) -> bool:
    """Whether the build has ended; BankBuildFailed when it failed."""
    if build.state == "failed":
        raise BankBuildFailed(build)
    return build.state == "done"
def _retry_params(failed: bool, refused: bool) -> dict[str, str]:
    return {"failed": str(failed).lower(), "refused": str(refused).lower()}


def _refused(response: httpx.Response) -> None:
    """Raises ClientError carrying the API's `detail` for a 4xx or 5xx response (its body already read)."""
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise ClientError(response.status_code, detail)


def _read(response: httpx.Response, model: type[Model]) -> Model:
    """The response body as `model`, or ClientError carrying the API's `detail`."""
    _refused(response)
    return model.model_validate(response.json())


def _deliveries(response: httpx.Response) -> list[WebhookDeliveryPublic]:
    """A batch's webhook deliveries from the response body, or ClientError."""
    _refused(response)
    return [WebhookDeliveryPublic.model_validate(row) for row in response.json()]


class Client:
    """A synchronous client; use as a context manager or call `close()`."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=_headers(token), timeout=timeout,
                                 transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def ask(self, question: str, *, reference: str | None = None, bank: str | None = None,
            min_confidence: float | None = None, rerank: bool | None = None, wait: float = 30.0,
            callback: str | None = None, alt_answers: Iterable[str] | None = None) -> JobPublic:
        """One question; waits up to `wait` seconds on the server for its answer (status "done" once answered);
        `callback`: a URL the job's final state is POSTed to (signed; docs/user-guide.md, Webhooks); `alt_answers`:
        other sentences that count as right beside the reference."""
        response = self.http.post("/v1/jobs", params={"wait": wait},
                                  json=_job_body(question, reference, bank, min_confidence, rerank, callback, alt_answers),
                                  timeout=wait + WAIT_SLACK)
        return _read(response, JobPublic)

    def job(self, job_id: str) -> JobPublic:
        return _read(self.http.get(f"/v1/jobs/{job_id}"), JobPublic)

    def submit(self, items: Iterable[Item], *, bank: str | None = None, min_confidence: float | None = None,
               key: str | None = None, micro_batch: int | None = None, rerank: bool | None = None,
               callback: str | None = None) -> Accepted:
        """One batch of questions (strings or {"question", "reference", "alt_answers"} objects); `key` makes a
        resubmission a no-op; `callback`: a URL the batch's summary is POSTed to once every job is final."""
        body = _batch_body(items, bank, min_confidence, key, micro_batch, rerank, callback)
        return _read(self.http.post("/v1/batches", json=body), Accepted)

    def batch(self, batch_id: str) -> BatchPublic:
        return _read(self.http.get(f"/v1/batches/{batch_id}"), BatchPublic)

    def batches(self, *, offset: int = 0, limit: int = 50, interactive: bool = False) -> BatchList:
        """A page of batches, newest first (the one-job batches of single questions only with `interactive`)."""
        params = {"offset": offset, "limit": limit, "interactive": interactive}
        return _read(self.http.get("/v1/batches", params=params), BatchList)

    def wait(self, batch_id: str, *, poll: float = 0.5, timeout: float | None = None,
             progress: Progress | None = None) -> BatchPublic:
        """Polls the batch until every job is final; `progress` sees each summary; TimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            summary = self.batch(batch_id)
            if progress:
                progress(summary)
            if summary.finished:
                return summary
            if deadline is not None and time.monotonic() >= deadline:
                final = summary.done + summary.failed + summary.cancelled
                raise TimeoutError(f"batch {batch_id}: {final} of {summary.total} final after {timeout} s")
            time.sleep(poll)

    def cancel(self, batch_id: str) -> Controlled:
        """Cancels the batch's unfinished jobs; no result is written for them afterwards."""
        return _read(self.http.post(f"/v1/batches/{batch_id}/cancel"), Controlled)

    def cancel_job(self, job_id: str) -> Controlled:
        """Cancels one job that is not final."""
        return _read(self.http.post(f"/v1/jobs/{job_id}/cancel"), Controlled)

    def pause(self, batch_id: str) -> Controlled:
        """Pauses the batch: its micro-batches not yet started wait until `resume`."""
        return _read(self.http.post(f"/v1/batches/{batch_id}/pause"), Controlled)

    def resume(self, batch_id: str) -> Controlled:
        return _read(self.http.post(f"/v1/batches/{batch_id}/resume"), Controlled)

    def retry(self, batch_id: str, *, failed: bool = True, refused: bool = False) -> Controlled:
        """New attempts of the batch's failed (and refused) jobs: same ids; answered jobs stay as they are."""
        return _read(self.http.post(f"/v1/batches/{batch_id}/retry", params=_retry_params(failed, refused)), Controlled)

    def results(self, batch_id: str) -> Iterator[JobPublic]:
        """Every job of the batch in input order, streamed."""
        with self.http.stream("GET", f"/v1/batches/{batch_id}/results") as response:
            if response.status_code >= 400:
                response.read()
                _refused(response)
            for line in response.iter_lines():
                if line:
                    yield JobPublic.model_validate(json.loads(line))

    def webhooks(self, batch_id: str) -> list[WebhookDeliveryPublic]:
        """The webhook deliveries of the batch and its jobs: status, attempts, last status code or error."""
        return _deliveries(self.http.get(f"/v1/batches/{batch_id}/webhooks"))

    def banks(self) -> BankList:
        """Every bank: current version, versions kept, counts, size on disk, build time."""
        return _read(self.http.get("/v1/banks"), BankList)

    def bank(self, name: str) -> BankDetail:
        return _read(self.http.get(f"/v1/banks/{name}"), BankDetail)

    def bank_build(self, name: str, build_id: str) -> BankBuild:
        return _read(self.http.get(f"/v1/banks/{name}/builds/{build_id}"), BankBuild)

    def build_bank(self, name: str, paths: Iterable[str | Path], *, add: bool = False, replace: bool = False,
                   index: str | None = None, split: bool = True, skip_bad: bool = False, wait: bool = True,
                   poll: float = 0.5, timeout: float | None = None,
                   progress: Callable[[BankBuild], None] | None = None) -> BankBuild:
        """Uploads files (and folders' documents) to build a new version of bank `name`; with `wait`, polls the build
        until done (`progress` sees each record), raising BankBuildFailed if it fails and TimeoutError after `timeout` s."""
        response = self.http.post(f"/v1/banks/{name}", params=_build_params(add, replace, index, split, skip_bad),
                                  files=_uploads(paths))
        build = _read(response, BankBuild)
        deadline = None if timeout is None else time.monotonic() + timeout
        while wait:
            if progress:
                progress(build)
            if _finished(build):
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"build {build.id} of bank {name}: {build.state} after {timeout} s")
            time.sleep(poll)
            build = self.bank_build(name, build.id)
        return build

    def remove_bank(self, name: str) -> None:
        """Removes a bank and all its versions."""
        _refused(self.http.delete(f"/v1/banks/{name}"))


class AsyncClient:
    """The same client for asyncio; use `async with` or await `aclose()`."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=_headers(token), timeout=timeout,
                                      transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def ask(self, question: str, *, reference: str | None = None, bank: str | None = None,
                  min_confidence: float | None = None, rerank: bool | None = None, wait: float = 30.0,
                  callback: str | None = None, alt_answers: Iterable[str] | None = None) -> JobPublic:
        response = await self.http.post("/v1/jobs", params={"wait": wait},
                                        json=_job_body(question, reference, bank, min_confidence, rerank, callback, alt_answers),
                                        timeout=wait + WAIT_SLACK)
        return _read(response, JobPublic)

    async def job(self, job_id: str) -> JobPublic:
        return _read(await self.http.get(f"/v1/jobs/{job_id}"), JobPublic)

    async def submit(self, items: Iterable[Item], *, bank: str | None = None, min_confidence: float | None = None,
                     key: str | None = None, micro_batch: int | None = None, rerank: bool | None = None,
                     callback: str | None = None) -> Accepted:
        body = _batch_body(items, bank, min_confidence, key, micro_batch, rerank, callback)
        return _read(await self.http.post("/v1/batches", json=body), Accepted)

    async def batch(self, batch_id: str) -> BatchPublic:
        return _read(await self.http.get(f"/v1/batches/{batch_id}"), BatchPublic)

    async def batches(self, *, offset: int = 0, limit: int = 50, interactive: bool = False) -> BatchList:
        params = {"offset": offset, "limit": limit, "interactive": interactive}
        return _read(await self.http.get("/v1/batches", params=params), BatchList)

    async def wait(self, batch_id: str, *, poll: float = 0.5, timeout: float | None = None,
                   progress: Progress | None = None) -> BatchPublic:
        async with asyncio.timeout(timeout):
            while True:
                summary = await self.batch(batch_id)
                if progress:
                    progress(summary)
                if summary.finished:
                    return summary
                await asyncio.sleep(poll)

    async def cancel(self, batch_id: str) -> Controlled:
        return _read(await self.http.post(f"/v1/batches/{batch_id}/cancel"), Controlled)

    async def cancel_job(self, job_id: str) -> Controlled:
        return _read(await self.http.post(f"/v1/jobs/{job_id}/cancel"), Controlled)

    async def pause(self, batch_id: str) -> Controlled:
        return _read(await self.http.post(f"/v1/batches/{batch_id}/pause"), Controlled)

    async def resume(self, batch_id: str) -> Controlled:
        return _read(await self.http.post(f"/v1/batches/{batch_id}/resume"), Controlled)

    async def retry(self, batch_id: str, *, failed: bool = True, refused: bool = False) -> Controlled:
        response = await self.http.post(f"/v1/batches/{batch_id}/retry", params=_retry_params(failed, refused))
        return _read(response, Controlled)

    async def results(self, batch_id: str) -> AsyncIterator[JobPublic]:
        async with self.http.stream("GET", f"/v1/batches/{batch_id}/results") as response:
            if response.status_code >= 400:
                await response.aread()
                _refused(response)
            async for line in response.aiter_lines():
                if line:
                    yield JobPublic.model_validate(json.loads(line))

    async def webhooks(self, batch_id: str) -> list[WebhookDeliveryPublic]:
        return _deliveries(await self.http.get(f"/v1/batches/{batch_id}/webhooks"))

    async def banks(self) -> BankList:
        return _read(await self.http.get("/v1/banks"), BankList)

    async def bank(self, name: str) -> BankDetail:
        return _read(await self.http.get(f"/v1/banks/{name}"), BankDetail)

    async def bank_build(self, name: str, build_id: str) -> BankBuild:
        return _read(await self.http.get(f"/v1/banks/{name}/builds/{build_id}"), BankBuild)

    async def build_bank(self, name: str, paths: Iterable[str | Path], *, add: bool = False, replace: bool = False,
                         index: str | None = None, split: bool = True, skip_bad: bool = False, wait: bool = True,
                         poll: float = 0.5, timeout: float | None = None,
                         progress: Callable[[BankBuild], None] | None = None) -> BankBuild:
        response = await self.http.post(f"/v1/banks/{name}", params=_build_params(add, replace, index, split, skip_bad),
                                        files=_uploads(paths))
        build = _read(response, BankBuild)
        async with asyncio.timeout(timeout):
            while wait:
                if progress:
                    progress(build)
                if _finished(build):
                    break
                await asyncio.sleep(poll)
                build = await self.bank_build(name, build.id)
        return build

    async def remove_bank(self, name: str) -> None:
        _refused(await self.http.delete(f"/v1/banks/{name}"))
