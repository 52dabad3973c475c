"""Distributed bank builds: corpus chunks embedded by real `cubeqa worker --stage encode` processes over real Redis."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from conftest import DATA, migrated
from jobsystem import service_env, stage_workers, start, wait_for_batch, wait_until_idle

from pipeline.knowledge.cache import encoder_dir
from pipeline.knowledge.store import BankStore
from storage.repository import NewJob
from tasks.app import app as celery
from tasks.corpus import embed_on_workers, embed_sources
from tasks.priority import queue_keys
from tasks.producer import submit

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(1200)]


def corpus(path: Path, rows: int) -> tuple[Path, list[str]]:
    """The answers of the first `rows` SQuAD training pairs as a JSONL document file; its unique sentences."""
    with (DATA / "squad_sent_train.jsonl").open(encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(rows)]
    path.write_text("".join(lines), encoding="utf-8")
    return path, list(dict.fromkeys(json.loads(line)["answer"] for line in lines))


def never(texts: list[str]) -> np.ndarray:
    raise AssertionError(f"the build embedded {len(texts)} sentences itself: the workers should have cached them")


def shards(cache: Path, encoder) -> list[Path]:
    directory = encoder_dir(cache, encoder.identity)
    return sorted(directory.glob("chunk-*.safetensors")) if directory.is_dir() else []


@pytest.fixture(scope="module")
def workers(broker_url, tmp_path_factory):
    """Encode, cube and decode workers on a SQLite store of their own."""
    logdir = tmp_path_factory.mktemp("bank-dist")
    url = f"sqlite:///{logdir / 'jobs.db'}"
    sessions = migrated(url)
    with stage_workers(broker_url, url, logdir) as processes:
        yield {"url": url, "sessions": sessions, "logdir": logdir, "processes": processes}
    sessions.kw["bind"].dispose()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, encoder):
    """The in-process build of 1,000 pairs' answers: no cache, no workers."""
    folder = tmp_path_factory.mktemp("reference")
    path, texts = corpus(folder / "answers.jsonl", 1000)
    store = BankStore(folder / "banks")
    store.build("answers", [path], embed=lambda t: encoder.encode(t).vectors, encoder_identity=encoder.identity, split=False)
    return path, texts, store.load("answers", encoder_identity=encoder.identity)


def test_a_distributed_build_equals_the_in_process_build(workers, reference, encoder, tmp_path) -> None:
    path, texts, local = reference
    store, cache = BankStore(tmp_path / "banks"), tmp_path / "banks" / ".embeddings"
    report = embed_sources(celery, store, "answers", [path], encoder.identity, cache, add=False, replace=False, split=False,
                           chunk=256, stall_timeout=600)
    assert (report.sentences, report.cached, report.chunks) == (len(texts), 0, math.ceil(len(texts) / 256))
    assert len(shards(cache, encoder)) == report.chunks
    store.build("answers", [path], embed=never, encoder_identity=encoder.identity, split=False, cache_dir=cache)
    remote = store.load("answers", encoder_identity=encoder.identity)
    assert remote.version == local.version
    assert list(remote.texts) == list(local.texts)
    np.testing.assert_allclose(remote.vectors, local.vectors, atol=1e-5)
    again = embed_sources(celery, store, "answers", [path], encoder.identity, cache, add=False, replace=True, split=False, chunk=256)
    assert again.chunks == 0  # the bank holds every sentence: nothing to send


def test_an_interrupted_build_resumes_from_its_finished_shards(workers, reference, encoder, broker_url, tmp_path) -> None:
    path, texts, local = reference
    root = tmp_path / "banks"
    cache = root / ".embeddings"
    env = service_env(broker_url, workers["url"], CUBEQA_BANK_ROOT=str(root))
    cli = start(["bank", "build", "answers", str(path), "--distributed", "--no-split", "--chunk", "64"], env, tmp_path / "cli.log")
    total = math.ceil(len(texts) / 64)
    deadline = time.monotonic() + 600
    while not shards(cache, encoder) and time.monotonic() < deadline and cli.poll() is None:
        time.sleep(0.05)
    os.killpg(cli.pid, signal.SIGKILL)  # the build dies, and with it the chunks still queued (a purged or lost queue)
    cli.wait()
    redis.Redis.from_url(broker_url).delete(*queue_keys("embed"))  # every priority level of the queue
    wait_until_idle(broker_url, celery, timeout=300)
    finished = len(shards(cache, encoder))
    assert 1 <= finished < total, (tmp_path / "cli.log").read_text(errors="replace")[-2000:]

    store = BankStore(root)
    report = embed_sources(celery, store, "answers", [path], encoder.identity, cache, add=False, replace=False, split=False,
                           chunk=64, stall_timeout=600)
    assert report.chunks == total - finished
    assert report.cached == 64 * finished or finished == total  # every finished shard is a full chunk of 64
    assert len(shards(cache, encoder)) == total
    store.build("answers", [path], embed=never, encoder_identity=encoder.identity, split=False, cache_dir=cache)
    remote = store.load("answers", encoder_identity=encoder.identity)
    assert remote.version == local.version
    np.testing.assert_allclose(remote.vectors, local.vectors, atol=1e-5)


def test_questions_complete_while_a_build_runs(workers, encoder, tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, texts = corpus(tmp_path / "large.jsonl", 6000)
    cache = tmp_path / ".embeddings"
    total = math.ceil(len(texts) / 128)
    with ThreadPoolExecutor(1) as pool:
        build = pool.submit(embed_on_workers, celery, texts, encoder.identity, cache, chunk=128, stall_timeout=600)
        deadline = time.monotonic() + 600
        while not shards(cache, encoder) and time.monotonic() < deadline and not build.done():
            time.sleep(0.05)
        lines = (DATA / "squad_sent_val.jsonl").read_text(encoding="utf-8").splitlines()[:8]
        items = [NewJob(question=json.loads(line)["question"], line=i + 1) for i, line in enumerate(lines)]
        batch = submit(workers["sessions"], items, micro_batch=1)
        summary = wait_for_batch(workers["sessions"], batch.batch_id, timeout=600)
        during = len(shards(cache, encoder))
        report = build.result(timeout=1200)
    assert (summary.done, summary.failed) == (len(items), 0)
    assert during < total  # the questions went through between chunks, not after the corpus
    assert report.chunks == total == len(shards(cache, encoder))


def test_a_worker_refuses_chunks_it_must_not_embed_and_skips_written_ones(encoder, tmp_path) -> None:
    from types import SimpleNamespace

    from tasks.corpus import ChunkRefused, CorpusChunk, embed_chunk

    calls: list[int] = []
    counting = SimpleNamespace(identity=encoder.identity, encode=lambda texts: calls.append(len(texts)) or encoder.encode(texts))
    stage = SimpleNamespace(bank_encoder=lambda: counting)  # the encode stage's torch teacher, on either runtime
    texts = ["The grotto is a replica.", "It was built in 1858."]
    other = {**encoder.identity.to_dict(), "weights_hash": "0" * len(encoder.identity.weights_hash)}
    with pytest.raises(ChunkRefused, match="this worker runs"):
        embed_chunk(CorpusChunk("b", 0, other, str(tmp_path), texts), stage)
    with pytest.raises(ChunkRefused, match="not visible on this worker"):
        embed_chunk(CorpusChunk("b", 0, encoder.identity.to_dict(), str(tmp_path / "elsewhere"), texts), stage)
    with pytest.raises(ChunkRefused, match="unknown fields"):
        CorpusChunk.from_wire({**CorpusChunk("b", 0, {}, "", texts).to_wire(), "pickle": b""})
    chunk = CorpusChunk("b", 0, encoder.identity.to_dict(), str(tmp_path), texts)
    assert (embed_chunk(chunk, stage), embed_chunk(chunk, stage)) == (True, False)  # a redelivery writes nothing
    assert calls == [2] and len(shards(tmp_path, encoder)) == 1
