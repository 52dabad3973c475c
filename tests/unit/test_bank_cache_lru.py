"""A decode worker's bank versions stay within their byte budget, least recently used dropped first."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_knowledge_helpers import IDENTITY, OTHER, hash_embed  # noqa: E402

from pipeline.errors import BankNotFound, IncompatibleBank  # noqa: E402
from pipeline.knowledge.bank_cache import BankCache, BankRef  # noqa: E402
from pipeline.knowledge.store import BankStore  # noqa: E402


def three_versions(tmp_path: Path) -> tuple[BankStore, list[BankRef]]:
    """Bank "kb" built, then rebuilt twice with more sentences: three versions on disk (the store keeps three)."""
    store = BankStore(tmp_path / "banks")
    refs = []
    for n in (4, 5, 6):
        doc = tmp_path / f"doc{n}.txt"
        doc.write_text(" ".join(f"Sentence {i} of version {n}." for i in range(n)), encoding="utf-8")
        refs.append(BankRef("kb", store.build("kb", [doc], embed=hash_embed, encoder_identity=IDENTITY, replace=True).version))
    assert len({ref.version for ref in refs}) == 3
    return store, refs


def test_the_cache_drops_the_least_recently_used_version_beyond_its_bytes(tmp_path: Path) -> None:
    store, (a, b, c) = three_versions(tmp_path)
    sizes = {ref: store.load(ref.name, ref.version, encoder_identity=IDENTITY).nbytes for ref in (a, b, c)}
    cache = BankCache(store, max_bytes=sum(sizes.values()) - 1, encoder=IDENTITY)  # any two fit, never three
    first = cache.get(a)
    cache.get(b)
    assert cache.loaded() == [a, b]
    assert cache.get(a) is first  # a hit: not reloaded, and now the most recent
    cache.get(c)
    assert cache.loaded() == [a, c]  # b was the least recently used
    assert cache.nbytes == sizes[a] + sizes[c] <= cache.max_bytes
    assert cache.get(b).version == b.version and cache.loaded() == [c, b]  # reloaded on demand, a dropped in turn


def test_one_version_stays_even_when_it_alone_exceeds_the_budget(tmp_path: Path) -> None:
    store, (a, b, _) = three_versions(tmp_path)
    cache = BankCache(store, max_bytes=1, encoder=IDENTITY)
    cache.get(a)
    cache.get(b)
    assert cache.loaded() == [b]


def test_a_removed_version_is_served_while_held_and_refused_naming_the_bank_once_dropped(tmp_path: Path) -> None:
    store, (a, b, _) = three_versions(tmp_path)
    cache = BankCache(store, max_bytes=1, encoder=IDENTITY)
    held = cache.get(a)
    store.remove("kb")
    assert cache.get(a) is held
    cache_other = BankCache(store, max_bytes=1, encoder=IDENTITY)
    with pytest.raises(BankNotFound, match="bank 'kb' .*removed"):
        cache_other.get(b)


def test_a_bank_of_another_encoder_is_refused_naming_both(tmp_path: Path) -> None:
    store, (a, _, _) = three_versions(tmp_path)
    with pytest.raises(IncompatibleBank, match="hash0000.*other000"):
        BankCache(store, max_bytes=2**30, encoder=OTHER).get(a)
