"""GET /v1/banks, GET and DELETE /v1/banks/{name}, POST /v1/banks/{name} with documents (a build in the background)
and GET /v1/banks/{name}/builds/{build_id} (its progress). Refusals name the bank, never the server's bank root."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from cubeqa.api.bank_builds import BankService, BuildRunning
from cubeqa.api.bank_schemas import BankBuild, BankDetail, BankList, BankSummary, BankVersion
from cubeqa.api.deps import guarded
from cubeqa.api.uploads import UploadRefused, stage_uploads
from cubeqa.bank_build import BuildOptions
from pipeline.errors import BankBusy, BankError, BankNotFound, InputError
from pipeline.knowledge.store import BankInfo, check_name

router = APIRouter(prefix="/v1/banks", tags=["banks"], dependencies=guarded)
BUILD_ID = re.compile(r"^[0-9a-f]{32}$")
UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": (
        "the documents, each under its own file name (no folders): .md .rst .html .docx .txt .pdf .jsonl .csv")}},
}}}}}
REFUSALS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such bank (add=true)"}, 409: {"description": "the bank exists, or a build of it runs"},
    411: {"description": "no Content-Length"}, 413: {"description": "too large (request, or a .docx unpacked)"},
    415: {"description": "unsupported or binary file"}, 422: {"description": "bad bank or file name, no files"},
}


def get_banks(request: Request) -> BankService:
    """The app's bank service (create_app puts it in the app's state)."""
    service: BankService = request.app.state.banks
    return service


BanksDep = Annotated[BankService, Depends(get_banks)]


def checked(name: str) -> str:
    """The bank name, or a 422 with the CLI's rule."""
    try:
        return check_name(name)
    except InputError as exc:
        raise HTTPException(422, str(exc)) from exc


def summary(info: BankInfo) -> dict[str, Any]:
    """The BankSummary fields of a bank's info."""
    return dict(
        name=info.name, version=info.version, versions=list(info.versions), sentences=info.sentences,
        documents=info.documents, size_bytes=info.size_bytes, index=info.index.get("kind"),
        built_at=None if info.builtin else info.built_at or None, builtin=info.builtin, problem=info.problem,
    )


@router.get("", response_model=BankList)
def list_banks(banks: BanksDep) -> BankList:
    """Every bank: current version, versions kept, sentences, documents, size on disk, build time."""
    return BankList(banks=[BankSummary(**summary(info)) for info in banks.store.infos()])


@router.get("/{name}", response_model=BankDetail, responses={404: {"description": "no such bank"}})
def show_bank(name: str, banks: BanksDep) -> BankDetail:
    """A bank's current version in detail (encoder, index, sample sentences) and every version kept."""
    try:
        info = banks.store.show(checked(name))
        kept = banks.store.versions(name)
    except BankNotFound as exc:
        raise HTTPException(404, f"no bank named {name!r}") from exc
    return BankDetail(
        **summary(info), encoder=info.encoder, index_params=info.index.get("params", {}),
        content_hash=info.extra.get("content_hash"), samples=list(info.samples),
        kept=[BankVersion(**vars(v)) for v in kept],
    )


@router.delete("/{name}", status_code=204, responses={404: {"description": "no such bank"},
                                                      409: {"description": "built in, or being built"}})
def remove_bank(name: str, banks: BanksDep) -> Response:
    """Removes a bank and all its versions (jobs pinned to it then fail, naming the bank)."""
    checked(name)
    if (build := banks.builds.active(name)) is not None:
        raise HTTPException(409, f"bank {name!r} has a build queued or running ({build}); remove it once that ends")
    try:
        banks.store.remove(name)
    except BankNotFound as exc:
        raise HTTPException(404, f"no bank named {name!r}") from exc
    except (BankBusy, BankError) as exc:  # busy, or built in
        raise HTTPException(409, str(exc)) from exc
    return Response(status_code=204)


@router.post("/{name}", status_code=202, response_model=BankBuild, openapi_extra=UPLOAD_BODY, responses=REFUSALS)
async def build_bank(
    name: str,
    request: Request,
    response: Response,
    banks: BanksDep,
    add: Annotated[bool, Query(description="keep the bank's sentences and add these documents' (`cubeqa bank add`)")] = False,
    replace: Annotated[bool, Query(description="rebuild an existing bank from these documents as a new version")] = False,
    index: Annotated[Literal["flat", "hnsw", "ivfpq"] | None, Query(description="index kind; default: by size")] = None,
    split: Annotated[bool, Query(description="split texts into sentences (false: a line, row or paragraph each)")] = True,
    skip_bad: Annotated[bool, Query(description="leave out a document that cannot be read instead of failing")] = False,
) -> BankBuild:
    """Builds a new version of bank `name` from the uploaded documents (multipart, field `files`) as a background
    build: 202 with the build's record; poll GET /v1/banks/{name}/builds/{id} until it is done or failed."""
    options = BuildOptions(add=add, replace=replace, kind=index, split=split, skip_bad=skip_bad, distributed=True)
    await run_in_threadpool(may_build, banks, checked(name), options)
    if request.headers.get("content-length") is None:  # a chunked body would be read before its size is known
        raise HTTPException(411, "send the documents with a Content-Length (no chunked upload)")
    form = await request.form()
    try:
        uploads = form.getlist("files")
        if not all(isinstance(u, UploadFile) for u in uploads) or len(form.multi_items()) > len(uploads):
            raise HTTPException(422, "send only files, each as a multipart form field named 'files'")
        record = await run_in_threadpool(start, banks, name, [u for u in uploads if isinstance(u, UploadFile)], options)
    finally:
        await form.close()
    response.headers["Location"] = f"/v1/banks/{name}/builds/{record['id']}"
    return build_view(record)


def may_build(banks: BankService, name: str, options: BuildOptions) -> None:
    """Refuses, before the body is read, what `cubeqa bank build/add` would refuse about the bank itself."""
    if options.add and options.replace:
        raise HTTPException(422, "add and replace exclude each other: add keeps the bank's sentences, replace does not")
    try:
        banks.store.resolve(name)
        exists = True
    except BankNotFound:
        exists = False
    if options.add and not exists:
        raise HTTPException(404, f"no bank named {name!r}; build it first")
    if exists and not (options.add or options.replace):
        raise HTTPException(409, f"bank {name!r} already exists; POST with replace=true to rebuild it or add=true to extend it")
    if (build := banks.builds.active(name)) is not None:
        raise HTTPException(409, f"a build of bank {name!r} is already queued or running ({build}); wait for it to finish")


def start(banks: BankService, name: str, uploads: list[UploadFile], options: BuildOptions) -> dict[str, str]:
    """Stages and checks the uploads under the build's lease, then queues the build; nothing is left on a refusal."""
    try:
        build_id, staging = banks.builds.reserve(name)
    except BuildRunning as exc:
        raise HTTPException(409, str(exc)) from exc
    try:
        files = stage_uploads(uploads, staging, banks.max_unpacked)
        return banks.builds.start(build_id, name, staging, files, options)
    except BaseException as exc:
        banks.builds.release(build_id, name, staging)
        if isinstance(exc, UploadRefused):
            raise HTTPException(exc.status, exc.detail) from exc
        raise


@router.get("/{name}/builds/{build_id}", response_model=BankBuild, responses={404: {"description": "no such build"}})
def get_build(name: str, build_id: str, banks: BanksDep) -> BankBuild:
    """A build's state (queued, running, done, failed), its stage and progress, and its outcome."""
    record = banks.builds.get(build_id) if BUILD_ID.match(build_id) else None
    if record is None or record["bank"] != name:
        raise HTTPException(404, f"no build {build_id!r} of bank {name!r} (records are kept for 7 days)")
    return build_view(record)


def build_view(record: dict[str, str]) -> BankBuild:
    """The public record of a build from its Redis hash (every value a string there)."""
    return BankBuild(
        id=record["id"], bank=record["bank"], state=record["state"], stage=record["stage"] or None,
        done=int(record["done"]), total=int(record["total"]), files=json.loads(record["files"]),
        version=record["version"] or None, sentences=int(record["sentences"]) if record["sentences"] else None,
        notes=json.loads(record["notes"]), error=record["error"] or None, created_at=record["created_at"],
        finished_at=record["finished_at"] or None,
    )
