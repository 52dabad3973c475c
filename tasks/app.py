"""The Celery app: one queue per model stage, msgpack/JSON only, late acks, prefetch 1.

The app object is created unconfigured at import (tasks register on it);
`configure` gives it a broker and limits from plain values at an edge.
"""

from __future__ import annotations

from pathlib import Path

from celery import Celery

from tasks.priority import LEVELS

STAGES = ("encode", "cube", "decode", "rerank")  # rerank: only for jobs submitted with rerank on
OPTIONAL_STAGES = ("rerank",)  # a deployment whose bundle has no reranker runs no worker for it


def served_stages(bundle_dir: Path) -> tuple[str, ...]:
    """The stages a bundle runs: all four, or without rerank when it has no reranker to load."""
    from pipeline.rerank.ranker import has_reranker

    return STAGES if has_reranker(bundle_dir) else tuple(s for s in STAGES if s not in OPTIONAL_STAGES)
TASK_NAMES = {stage: f"cubeqa.{stage}" for stage in STAGES}
EMBED_QUEUE = "embed"  # corpus chunks of distributed bank builds, consumed by the encode workers beside their questions
EMBED_TASK = "cubeqa.embed_corpus"
HOOKS_QUEUE = "hooks"  # webhook deliveries, consumed by `cubeqa worker --stage hooks`: a slow receiver holds no model stage
HOOK_TASK = "cubeqa.deliver_hook"

app = Celery("cubeqa", set_as_current=False, include=["tasks.stages", "tasks.health", "tasks.corpus", "tasks.hooks"])


def configure(broker_url: str, *, task_time_limit: int = 300, visibility_timeout: int = 3600) -> Celery:
    """Points the app at a broker and sets the delivery guarantees every stage relies on."""
    app.conf.update(
        broker_url=broker_url,
        broker_connection_retry_on_startup=True,
        # One Redis list per priority level and queue (tasks.priority): interactive jobs first, batches sharing workers.
        broker_transport_options={"visibility_timeout": visibility_timeout, "priority_steps": list(LEVELS)},
        # Messages: msgpack (binary vectors travel as raw float32 bytes); JSON accepted; pickle and YAML refused.
        task_serializer="msgpack",
        accept_content=["msgpack", "json"],
        event_serializer="json",
        result_accept_content=["msgpack", "json"],
        task_ignore_result=True,  # results live in SQL, not in a result backend
        # A task is acknowledged only after it ran; a killed child hands its task back; no hoarding.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_time_limit=task_time_limit,
        task_soft_time_limit=max(5, task_time_limit - 10),
        task_routes={**{name: {"queue": stage} for stage, name in TASK_NAMES.items()}, EMBED_TASK: {"queue": EMBED_QUEUE},
                     HOOK_TASK: {"queue": HOOKS_QUEUE}},
        task_default_queue="encode",
        # Events for Flower.
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app
