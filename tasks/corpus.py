"""Corpus embedding on the encode workers: the `cubeqa.embed_corpus` task and the build side that sends and awaits it.

A distributed bank build reads its documents into sentences, keeps those the shared embedding cache
lacks, and sends them in chunks to the `embed` queue, which every encode worker consumes beside its
question queue (prefetch 1: a question waits behind at most one chunk per worker slot). A task embeds
its chunk with the worker's loaded teacher and writes it as one cache chunk file, whose name is the
hash of its digests; the build waits until every expected file exists, then indexes locally, finding
every vector cached. A rerun after an interruption sends only the chunks whose files are missing; a
redelivered chunk whose file exists is a no-op. No result backend: the files are the results.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Task

from pipeline.encoding import EncoderIdentity
from pipeline.errors import BankExists, BankNotFound
from pipeline.knowledge.cache import EmbeddingCache, chunk_name, encoder_dir, text_digest, write_chunk
from tasks import runtime
from tasks.app import EMBED_QUEUE, EMBED_TASK, app
from tasks.priority import bulk_level
from tasks.runner import RETRY, describe
from tasks.wire import checked_fields

if TYPE_CHECKING:
    from celery import Celery

    from pipeline.knowledge.store import BankStore

log = logging.getLogger("tasks.corpus")

VERSION = 1  # of the chunk message; workers refuse versions they do not know
CHUNK = 128  # sentences per task: a question waits behind at most one chunk per worker slot (docs/bank-build.md)
STALL_TIMEOUT = 180.0  # seconds without a new chunk file before the build gives up on the workers

Progress = Callable[[str, int, int], None]  # (stage, done, total), as BankStore reports it


class ChunkRefused(ValueError):
    """A chunk this worker must not embed: another encoder, an unknown message, or a cache it cannot see."""


class WorkersUnavailable(RuntimeError):
    """No encode worker wrote an expected chunk within the stall timeout."""


@dataclass
class CorpusChunk:
    """Sentences to embed into the cache at `cache_dir` with the encoder whose identity is `encoder`."""

    build: str  # id of the sending build, for the logs
    index: int
    encoder: dict[str, Any]  # EncoderIdentity.to_dict() of the build's encoder
    cache_dir: str  # the embedding cache directory, on a volume the workers share
    texts: list[str]
    version: int = VERSION

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> CorpusChunk:
        """Reads a message; refuses an unknown version or fields."""
        if message.get("version") != VERSION:
            raise ChunkRefused(f"corpus chunk version {message.get('version')!r} is unknown to this worker (it reads {VERSION})")
        return checked_fields(cls, message, ChunkRefused, "corpus chunk")


@app.task(name=EMBED_TASK, bind=True, acks_late=True, **RETRY)
def embed_corpus(task: Task, message: dict[str, Any]) -> dict[str, Any]:
    """Embeds one chunk of a bank's sentences with this worker's teacher and writes it into the shared cache."""
    try:
        chunk = CorpusChunk.from_wire(message)
        written = embed_chunk(chunk, runtime.current().stage("encode"))
    except Exception as exc:
        log.warning("embed_corpus build=%s chunk=%s: %s", message.get("build"), message.get("index"), describe(exc))
        raise
    log.info("embed_corpus build=%s chunk=%d sentences=%d written=%s", chunk.build, chunk.index, len(chunk.texts), written)
    return {"sentences": len(chunk.texts), "written": written}


def embed_chunk(chunk: CorpusChunk, stage: Any) -> bool:
    """Writes the chunk's cache file unless it exists (a redelivery); False when it did. The encode stage's bank
    encoder embeds it: the torch teacher on either runtime."""
    encoder = stage.bank_encoder()
    identity = encoder.identity
    wanted = EncoderIdentity.from_dict(chunk.encoder)
    if not identity.same_model(wanted):
        raise ChunkRefused(f"chunk of build {chunk.build} was sent for encoder {wanted.model_id} (weights {wanted.weights_hash}); "
                           f"this worker runs {identity.model_id} (weights {identity.weights_hash})")
    root = Path(chunk.cache_dir)
    if not root.is_dir():
        raise ChunkRefused(f"embedding cache {root} is not visible on this worker: put the bank root on a volume every encode worker mounts")
    digests = [text_digest(t) for t in chunk.texts]
    directory = encoder_dir(root, identity)
    if (directory / chunk_name(digests)).is_file():
        return False
    write_chunk(directory, digests, encoder.encode(chunk.texts).vectors)
    return True


# ---- the build's side


@dataclass(frozen=True)
class EmbedReport:
    """What a distributed embedding did: unique sentences, those already cached, chunks sent, seconds waited."""

    sentences: int
    cached: int
    chunks: int
    seconds: float


def plan_chunks(texts: Sequence[str], encoder: EncoderIdentity, cache_dir: Path, chunk: int = CHUNK) -> tuple[list[str], list[list[str]]]:
    """(unique texts, chunks of the uncached ones): the unique texts cut in fixed chunks, each keeping its uncached
    texts, so a rerun after an interruption forms the same chunks and finds the finished ones cached."""
    unique = list(dict.fromkeys(texts))
    cache = EmbeddingCache(cache_dir, encoder)
    parts = ([t for t in unique[start : start + chunk] if text_digest(t) not in cache] for start in range(0, len(unique), chunk))
    return unique, [part for part in parts if part]


def embed_on_workers(
    celery: Celery, texts: Sequence[str], encoder: EncoderIdentity, cache_dir: Path, *, chunk: int = CHUNK,
    progress: Progress | None = None, stall_timeout: float = STALL_TIMEOUT, poll: float = 0.25,
) -> EmbedReport:
    """Sends the texts the cache lacks to the encode workers in chunks and waits until every chunk file exists."""
    if chunk < 1:
        raise ValueError("chunk must be at least 1 sentence")
    started = time.monotonic()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    unique, chunks = plan_chunks(texts, encoder, cache_dir, chunk)
    directory = encoder_dir(cache_dir, encoder)
    pending = {directory / chunk_name([text_digest(t) for t in part]): len(part) for part in chunks}
    cached = len(unique) - sum(pending.values())
    done = cached
    if progress:
        progress("embed", done, len(unique))
    build = uuid.uuid4().hex[:12]
    for index, part in enumerate(chunks):
        message = CorpusChunk(build=build, index=index, encoder=encoder.to_dict(), cache_dir=str(cache_dir.resolve()), texts=part)
        celery.send_task(EMBED_TASK, args=[message.to_wire()], queue=EMBED_QUEUE, priority=bulk_level(index))  # shares with batches
    last_change = time.monotonic()
    while pending:
        finished = [path for path in pending if path.is_file()]
        for path in finished:
            done += pending.pop(path)
        now = time.monotonic()
        if finished:
            last_change = now
            if progress:
                progress("embed", done, len(unique))
        elif now - last_change > stall_timeout:
            raise WorkersUnavailable(
                f"no encode worker wrote a chunk in {stall_timeout:.0f} s ({len(pending)} of {len(chunks)} chunks pending): "
                "start `cubeqa worker --stage encode` with the same encoder and bank root (a worker's log says why it refused a chunk)"
            )
        else:
            time.sleep(poll)
    return EmbedReport(sentences=len(unique), cached=cached, chunks=len(chunks), seconds=round(time.monotonic() - started, 3))


def embed_sources(
    celery: Celery, store: BankStore, name: str, paths: Sequence[Path | str], encoder: EncoderIdentity, cache_dir: Path, *,
    add: bool, replace: bool, split: bool, chunk: int = CHUNK, progress: Progress | None = None, stall_timeout: float = STALL_TIMEOUT,
    skip_bad: bool = False,
) -> EmbedReport:
    """Embeds on the encode workers what `store.build` (or, with `add`, `store.add`) of `paths` will need, so that it finds every vector cached."""
    if not add and not replace:
        try:
            store.resolve(name)
        except BankNotFound:
            pass
        else:
            raise BankExists(f"bank {name!r} already exists; use --replace to rebuild it or add to extend it")
    texts = store.texts_to_embed(name, paths, encoder_identity=encoder, split=split, skip_bad=skip_bad)
    return embed_on_workers(celery, texts, encoder, cache_dir, chunk=chunk, progress=progress, stall_timeout=stall_timeout)
