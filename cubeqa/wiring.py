"""Builds the lower layers' plain-valued parts from Settings (the edge where Settings stops)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from cubeqa.settings import PACKAGE_DIR, Settings
from storage.db import check_schema, make_engine, session_factory

if TYPE_CHECKING:
    from celery import Celery

    from pipeline import EncoderConfig, PhraseBankConfig
    from pipeline.knowledge.store import BankStore
    from storage.repository import Pin
    from tasks.hooks import HookConfig, HookPolicy
    from workers.main import WorkerOptions


def encoder_config(settings: Settings) -> EncoderConfig:
    """EncoderConfig from settings (nothing is loaded)."""
    from pipeline import EncoderConfig

    return EncoderConfig(
        model_dir=settings.encoder_dir, device=settings.device, batch_size=settings.encode_batch_size,
        half_precision=settings.half_precision,
    )


def bank_config(settings: Settings) -> PhraseBankConfig:
    from pipeline import PhraseBankConfig

    return PhraseBankConfig(index=settings.bank_index, min_score=settings.min_score)


def generative_options(settings: Settings) -> dict[str, object]:
    """Decoding knobs of the generative decoder that settings override (unset ones keep the bundle's)."""
    options = {"beam": settings.generative_beam, "rerank": settings.generative_rerank, "min_length": settings.generative_min_length,
               "int8": settings.generative_int8}
    return {name: value for name, value in options.items() if value is not None}


def bank_root(settings: Settings) -> Path:
    """Where banks live: CUBEQA_BANK_ROOT, else the user's data directory (the same for every command and database)."""
    return settings.bank_root


def legacy_bank_roots(settings: Settings) -> list[Path]:
    """Where earlier versions put banks by default (beside a SQLite database, else the cache), if they hold banks."""
    url = make_url(settings.database_url)
    candidates = [settings.cache_dir / "banks"]
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        candidates.insert(0, Path(url.database).resolve().parent / "cubeqa-banks")
    root = bank_root(settings).resolve()
    return [old for old in candidates
            if old.resolve() != root and old.is_dir() and any((p / "CURRENT").is_file() for p in old.iterdir())]


def legacy_hint(settings: Settings) -> str:
    """One line pointing at banks left in an old default location ("" when there are none)."""
    old = legacy_bank_roots(settings)
    if not old:
        return ""
    root = bank_root(settings)
    return (f"banks found in the old location {old[0]}: move them with `mv {old[0]}/* {root}/` "
            f"or set CUBEQA_BANK_ROOT={old[0]}")


@contextmanager
def hinted(settings: Settings) -> Iterator[None]:
    """Adds the old-location hint to a "no bank named" error raised inside."""
    from pipeline.errors import BankNotFound

    try:
        yield
    except BankNotFound as exc:
        hint = legacy_hint(settings)
        if not hint:
            raise
        raise BankNotFound(f"{exc}; {hint}") from exc


PACKAGED_BANK = PACKAGE_DIR / "banks" / "default"  # the shipped bundle's bank, read-only


def bank_store(settings: Settings) -> BankStore:
    """The bank store the settings name, with the bundle's own bank built in as `default`: the packaged directory
    when it is tied to the bundle's vectors, else one written once under the cache (a retrained or other bundle)."""
    from pipeline.knowledge.builtin import builtin_banks
    from pipeline.knowledge.store import BankStore

    return BankStore(bank_root(settings), builtin=builtin_banks(settings.bundle_dir, settings.cache_dir))


def pin_bank(settings: Settings, name: str | None, min_confidence: float | None = None, rerank: bool | None = None) -> Pin:
    """The submission's pin: bank `name` (None: CUBEQA_BANK) resolved to its current version, the threshold, and
    whether the rerank stage answers (`rerank`, None: CUBEQA_RERANK when the bundle has a reranker).

    Raises BankNotFound (naming the bank) for an unknown bank, InputError for a malformed name or a rerank the
    bundle cannot give: all before anything is stored.
    """
    from storage.repository import Pin

    bank = name or settings.bank
    with hinted(settings):
        version = bank_store(settings).resolve(bank)
    return Pin(bank=bank, bank_version=version, min_confidence=min_confidence, rerank=resolve_rerank(settings, rerank))


def resolve_rerank(settings: Settings, asked: bool | None) -> bool:
    """Whether answers are reranked: as asked, else CUBEQA_RERANK; only the bank decoder of a bundle with a reranker can."""
    from pipeline.errors import InputError
    from pipeline.rerank.ranker import has_reranker, reranks_by_default

    able = settings.decoder == "bank" and has_reranker(settings.bundle_dir)
    if asked and not able:
        why = "the decoder is not the bank" if settings.decoder != "bank" else f"the bundle {settings.bundle_dir} has no reranker"
        raise InputError(f"cannot rerank: {why} (cubeqa train-rerank trains one); ask without rerank")
    if asked is None:  # by default only with the confidence fit on the reranker's scores, which refuses
        return able and settings.rerank and reranks_by_default(settings.bundle_dir)
    return able and asked


def open_store(settings: Settings) -> sessionmaker[Session]:
    """Sessions on the configured database, after checking its schema is current."""
    engine = make_engine(settings.database_url)
    check_schema(engine)
    return session_factory(engine)


def redis_client(broker_url: str) -> redis.Redis:
    """A redis-py client for the broker URL (Celery's `redis+socket://PATH` is redis-py's `unix://PATH`)."""
    url = "unix://" + broker_url.removeprefix("redis+socket://") if broker_url.startswith("redis+socket://") else broker_url
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def celery_app(settings: Settings) -> Celery:
    """The Celery app configured for producing (and for workers) from settings."""
    from tasks.app import configure

    return configure(settings.broker_url, task_time_limit=settings.task_time_limit, visibility_timeout=settings.visibility_timeout)


def hook_policy(settings: Settings) -> HookPolicy:
    """Which callback URLs are accepted at submission and posted to at delivery."""
    from tasks.hooks import HookPolicy

    return HookPolicy(allow_http=settings.webhook_allow_http, allow_private=settings.webhook_allow_private)


def hook_config(settings: Settings) -> HookConfig | None:
    """The hooks worker's delivery config (None without a signing secret). The back-off is capped at half the
    visibility timeout: Redis would deliver a retry held longer twice."""
    from tasks.hooks import HookConfig

    if settings.webhook_secret is None:
        return None
    return HookConfig(
        secret=settings.webhook_secret.get_secret_value().encode(), policy=hook_policy(settings),
        timeout=settings.webhook_timeout, max_attempts=settings.webhook_max_attempts, backoff=settings.webhook_backoff,
        backoff_max=min(settings.webhook_backoff_max, settings.visibility_timeout / 2),
    )


def worker_options(settings: Settings, stage: str, concurrency: int | None, loglevel: str = "INFO", pool: str = "threads") -> WorkerOptions:
    """Worker options from settings; `concurrency` None picks the stage's default (see `default_concurrency`)."""
    from workers.main import WorkerOptions, default_concurrency

    return WorkerOptions(
        stage=stage,
        broker_url=settings.broker_url,
        database_url=settings.database_url,
        bundle_dir=settings.bundle_dir,
        encoder_config=encoder_config(settings),
        bank_config=bank_config(settings),
        top_k=settings.top_k,
        decoder=settings.decoder,
        generative_options=generative_options(settings),
        cache_dir=settings.cache_dir,
        threads=settings.threads,
        runtime=settings.runtime,
        concurrency=concurrency or default_concurrency(stage, settings.device),
        pool=pool,
        task_time_limit=settings.task_time_limit,
        visibility_timeout=settings.visibility_timeout,
        loglevel=loglevel,
        bank_root=bank_root(settings),
        bank_cache_bytes=settings.bank_cache_mb * 2**20,
        min_confidence=settings.min_confidence,
        hooks=hook_config(settings) if stage == "hooks" else None,
    )
