"""The one bank build from settings: `cubeqa bank build/add` and `POST /v1/banks/{name}` both run `build_bank`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cubeqa.settings import Settings
from cubeqa.wiring import bank_root, bank_store, celery_app, encoder_config, hinted

if TYPE_CHECKING:
    from pipeline import TeacherEncoder
    from pipeline.knowledge.store import BankInfo

Progress = Callable[[str, int, int], None]  # (stage: read|embed|index|write, done, total; 0 when unknown)


@dataclass(frozen=True)
class BuildOptions:
    """How a build runs: extend (`add`) or rebuild (`replace`) a bank, its index, splitting, where it embeds."""

    add: bool = False
    replace: bool = False
    kind: str | None = None  # flat, hnsw or ivfpq; None: chosen by the number of sentences
    index_params: dict[str, Any] | None = None
    split: bool = True
    skip_bad: bool = False
    distributed: bool = False  # embed on the encode workers (the `embed` queue)
    chunk: int = 128  # sentences per task sent to the encode workers
    wait: float = 180.0  # seconds without a finished chunk before a distributed build gives up on the workers


def build_errors() -> tuple[type[Exception], ...]:
    """The errors a build reports as one line (bad input, a busy or missing bank, no workers, the broker down)."""
    from pipeline import CubeQAError
    from tasks.corpus import WorkersUnavailable
    from tasks.errors import BROKER_DOWN

    return (CubeQAError, ValueError, OSError, WorkersUnavailable, *cast(tuple[type[Exception], ...], BROKER_DOWN))


def embedding_cache(settings: Settings) -> Path:
    """The embedding cache every build uses: under the bank root, so the encode workers of a distributed build
    write where a local build reads, and a rerun of either kind reuses what the other embedded."""
    return bank_root(settings) / ".embeddings"


def build_bank(
    settings: Settings, name: str, paths: Sequence[Path], options: BuildOptions, *, progress: Progress | None = None,
    encoder: TeacherEncoder | None = None,
) -> BankInfo:
    """Builds (with `options.add`, extends) bank `name` from `paths` with the teacher encoder (`encoder`, else loaded
    here), its new sentences embedded on the encode workers first when `options.distributed`."""
    from pipeline import TeacherEncoder
    from tasks.corpus import embed_sources

    store = bank_store(settings)
    if options.add:  # an unknown bank is named (with its root) before the encoder loads
        with hinted(settings):
            store.resolve(name)
    teacher = encoder or TeacherEncoder(encoder_config(settings))
    cache_dir = embedding_cache(settings)
    if options.distributed:
        embed_sources(celery_app(settings), store, name, paths, teacher.identity, cache_dir, add=options.add,
                      replace=options.replace, split=options.split, chunk=options.chunk, progress=progress,
                      stall_timeout=options.wait, skip_bad=options.skip_bad)
    common: dict[str, Any] = dict(
        embed=lambda texts: teacher.encode(texts).vectors, encoder_identity=teacher.identity, kind=options.kind,
        index_params=options.index_params, split=options.split, cache_dir=cache_dir, progress=progress,
        skip_bad=options.skip_bad,
    )
    if options.add:
        return store.add(name, paths, **common)
    return store.build(name, paths, replace=options.replace, **common)
