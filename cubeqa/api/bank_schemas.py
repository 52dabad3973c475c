"""What /v1/banks answers: banks with their versions and sizes, one bank in detail, a build's progress."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

BuildState = Literal["queued", "running", "done", "failed"]
# What a build accepts (pipeline.knowledge.documents.SUFFIXES; a test pins the two equal): the client picks
# these out of folders without importing the document readers.
UPLOAD_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".rest", ".html", ".htm", ".docx", ".pdf", ".jsonl", ".csv")


class BankSummary(BaseModel):
    """A bank's current version: counts, size on disk, when it was built, the versions kept for pinned jobs."""

    name: str
    version: str = Field(description="the current version, pinned by jobs submitted now")
    versions: list[str] = Field(description="versions kept, the current one first")
    sentences: int
    documents: int
    size_bytes: int = Field(description="bytes on disk of the current version")
    index: str | None = Field(description="FAISS index kind: flat, hnsw or ivfpq")
    built_at: str | None = Field(description="UTC build time (ISO 8601); None for a bank shipped with the package")
    builtin: bool = Field(description="shipped with the package: read-only, cannot be removed")
    problem: str | None = Field(None, description="why the bank cannot be read (then the counts are 0)")


class BankList(BaseModel):
    """Every bank the server answers from, by name."""

    banks: list[BankSummary]


class BankVersion(BaseModel):
    """One kept version of a bank."""

    version: str
    current: bool
    sentences: int
    documents: int
    size_bytes: int
    built_at: str
    parent: str | None = Field(description="the version an add extended; None for a build")


class BankDetail(BankSummary):
    """A bank's current version in detail, and every version kept."""

    encoder: dict[str, Any] = Field(description="the teacher encoder that embedded it (model id, dimension, weights hash)")
    index_params: dict[str, Any]
    content_hash: str | None
    samples: list[str] = Field(description="the first sentences")
    kept: list[BankVersion] = Field(description="the versions kept, newest first")


class BankBuild(BaseModel):
    """A build started by POST /v1/banks/{name}: its state, the stage it is in and how far, its outcome."""

    id: str
    bank: str
    state: BuildState
    stage: str | None = Field(description="read, embed, index or write while running")
    done: int = Field(description="items of the stage done (sentences read or embedded, vectors indexed, files written)")
    total: int = Field(description="items of the stage in all; 0 while not yet known")
    files: list[str] = Field(description="the uploaded file names")
    version: str | None = Field(description="the version built, once done")
    sentences: int | None = Field(description="sentences of the version built, once done")
    notes: list[str] = Field(description="files without a sentence, readers' hints, files skipped (skip_bad)")
    error: str | None = Field(description="why the build failed")
    created_at: str
    finished_at: str | None
