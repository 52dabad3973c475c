"""Builds the lower layers' plain-valued parts from Settings (the edge where Settings stops)."""

from __future__ import annotations

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
    """Where banks live: the setting, else beside a SQLite database (the embedded set-up), else under the cache."""
    if settings.bank_root is not None:
        return settings.bank_root
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / "cubeqa-banks"
    return settings.cache_dir / "banks"


BUILTIN_BANKS = {"default": PACKAGE_DIR / "banks" / "default"}  # shipped in the package, read-only


def bank_store(settings: Settings) -> BankStore:
    """The bank store the settings name, with the banks shipped in the package (`default`) built in."""
    from pipeline.knowledge.store import BankStore

    return BankStore(bank_root(settings), builtin=BUILTIN_BANKS)


def pin_bank(settings: Settings, name: str | None, min_confidence: float | None = None) -> Pin:
    """The submission's pin: bank `name` (None: CUBEQA_BANK) resolved to its current version, and the threshold.

    Raises BankNotFound (naming the bank) for an unknown bank, InputError for a malformed name: both before anything is stored.
    """
    from storage.repository import Pin

    bank = name or settings.bank
    return Pin(bank=bank, bank_version=bank_store(settings).resolve(bank), min_confidence=min_confidence)


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
        builtin_banks=dict(BUILTIN_BANKS),
        bank_cache_bytes=settings.bank_cache_mb * 2**20,
        min_confidence=settings.min_confidence,
    )
