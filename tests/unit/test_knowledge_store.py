"""BankStore: versions, reuse of vectors, locking, removal, built-in banks and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_knowledge_helpers import DIM, IDENTITY, OTHER, hash_embed

from pipeline.encoder import EncoderIdentity
from pipeline.errors import BankCorrupt, BankError, BankExists, BankNotFound, IncompatibleBank, InputError
from pipeline.knowledge.bankfiles import MANIFEST
from pipeline.knowledge.builtin import default_builtin
from pipeline.knowledge.store import BankStore

ROOT = Path(__file__).resolve().parents[2]


class CountingEmbed:
    """hash_embed that records how many texts it was asked to embed."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return hash_embed(texts)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "pumps.txt").write_text("The pump runs on twelve volts. Check the fuse first.\n\nReplace the filter yearly.\n", encoding="utf-8")
    (folder / "valves.md").write_text("# Valves\n\nThe valve is red. Close it before service.\n", encoding="utf-8")
    return folder


def build(store: BankStore, name: str, paths: list, **kwargs):
    kwargs.setdefault("embed", hash_embed)
    kwargs.setdefault("encoder_identity", IDENTITY)
    return store.build(name, paths, **kwargs)


def test_build_then_load_searches_and_gives_provenance(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path / "banks")
    events: list[tuple[str, int, int]] = []
    info = build(store, "manual", [docs], progress=lambda *e: events.append(e))
    assert (info.sentences, info.documents, info.index["kind"]) == (5, 2, "flat")
    assert info.size_bytes > 0 and info.samples[0] == "The pump runs on twelve volts."
    assert store.resolve("manual") == info.version
    assert ("embed", 5, 5) in events and events[-1][0] == "write"
    bank = store.load("manual", encoder_identity=IDENTITY)
    scores, rows = bank.search(hash_embed(["Close it before service."]), k=3)
    assert scores.shape == rows.shape == (1, 3)
    assert bank.texts[rows[0, 0]] == "Close it before service." and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    prov = bank.provenance(int(rows[0, 0]))
    assert (prov.doc_id, prov.title, prov.position, prov.before) == (str(docs / "valves.md"), "Valves", 1, ("The valve is red.",))
    assert bank.vectors.shape == (5, DIM) and bank.nbytes >= bank.vectors.nbytes
    manifest = json.loads((tmp_path / "banks" / "manual" / "versions" / info.version / MANIFEST).read_text())
    assert manifest["encoder"] == IDENTITY.to_dict() and manifest["sources"] == [str(docs.resolve())]
    version_dir = tmp_path / "banks" / "manual" / "versions" / info.version
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in version_dir.iterdir())  # readable by other workers' users
    assert [b.name for b in store.infos()] == ["manual"]


def test_the_version_is_a_content_hash(tmp_path: Path, docs: Path) -> None:
    a, b = BankStore(tmp_path / "a"), BankStore(tmp_path / "b")
    assert build(a, "x", [docs]).version == build(b, "y", [docs]).version
    assert build(b, "z", [docs], kind="hnsw").version != build(a, "x2", [docs]).version  # the index changes results


def test_existing_name_needs_replace_and_replace_makes_a_new_version(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path)
    first = build(store, "kb", [docs])
    with pytest.raises(BankExists, match="use --replace to rebuild it or add to extend it"):
        build(store, "kb", [docs])
    (docs / "extra.txt").write_text("A new sentence arrives.\n", encoding="utf-8")
    embed = CountingEmbed()
    second = build(store, "kb", [docs], replace=True, embed=embed)
    assert second.version != first.version and store.resolve("kb") == second.version
    assert embed.texts == ["A new sentence arrives."]  # the rest come from the previous version
    assert set(second.versions) == {first.version, second.version}


def test_add_embeds_only_new_sentences_and_keeps_the_old_version(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path)
    first = build(store, "kb", [docs / "pumps.txt"])
    embed = CountingEmbed()
    added = store.add("kb", [docs / "valves.md", docs / "pumps.txt"], embed=embed, encoder_identity=IDENTITY)
    assert embed.texts == ["The valve is red.", "Close it before service."]
    assert added.sentences == 5 and added.version != first.version
    old = store.load("kb", first.version, encoder_identity=IDENTITY)  # still there for pinned jobs
    new = store.load("kb", encoder_identity=IDENTITY)
    assert len(old) == 3 and new.texts[:3] == old.texts
    assert np.allclose(new.vectors, hash_embed(new.texts))
    with pytest.raises(InputError, match="already in bank 'kb'"):
        store.add("kb", [docs / "valves.md"], embed=embed, encoder_identity=IDENTITY)
    with pytest.raises(BankNotFound, match="build it first"):
        store.add("nothing", [docs], embed=embed, encoder_identity=IDENTITY)


def test_the_cache_spares_a_fresh_build_its_embeddings(tmp_path: Path, docs: Path) -> None:
    cache = tmp_path / "cache"
    build(BankStore(tmp_path / "one"), "kb", [docs], cache_dir=cache)
    embed = CountingEmbed()
    build(BankStore(tmp_path / "two"), "kb", [docs], cache_dir=cache, embed=embed)
    assert embed.texts == []
    assert not list(cache.rglob("*.npy")) and all(p.suffix == ".safetensors" for p in cache.rglob("chunk-*"))


@pytest.mark.parametrize("name", ["../evil", "a/b", "/abs", ".hidden", "", "x" * 65, "a\\b", "bad name", "..", "-dash"])
def test_names_with_path_characters_are_refused(tmp_path: Path, docs: Path, name: str) -> None:
    store = BankStore(tmp_path / "banks")
    with pytest.raises(InputError, match="bank name .* is not allowed"):
        build(store, name, [docs])
    with pytest.raises(InputError, match="is not allowed"):
        store.load(name, encoder_identity=IDENTITY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]  # nothing created, inside the root or outside it


def test_a_bank_from_another_encoder_is_refused_naming_both(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path)
    build(store, "kb", [docs])
    with pytest.raises(IncompatibleBank, match=r"bank 'kb' version \w+ was embedded with encoder .*hash0000.* running encoder is .*other000"):
        store.load("kb", encoder_identity=OTHER)
    with pytest.raises(IncompatibleBank, match="rebuild it with --replace"):
        store.add("kb", [docs], embed=hash_embed, encoder_identity=OTHER)


def test_removed_banks_and_missing_versions_fail_naming_the_bank(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path)
    version = build(store, "kb", [docs]).version
    with pytest.raises(BankNotFound, match="bank 'kb' has no version 'abc123'"):
        store.load("kb", "abc123", encoder_identity=IDENTITY)
    with pytest.raises(BankNotFound, match="has no version"):
        store.load("kb", "../../etc", encoder_identity=IDENTITY)
    store.remove("kb")
    assert store.infos() == [] and not (tmp_path / "kb").exists()
    with pytest.raises(BankNotFound, match=f"bank 'kb' \\(version {version}\\) no longer exists"):
        store.load("kb", version, encoder_identity=IDENTITY)
    with pytest.raises(BankNotFound, match="no bank named 'kb'"):
        store.remove("kb")


def test_a_served_bank_keeps_answering_provenance_after_removal(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path)
    build(store, "kb", [docs])
    bank = store.load("kb", encoder_identity=IDENTITY)
    store.remove("kb")
    assert bank.provenance(0).doc_id == str(docs / "pumps.txt")


def test_old_versions_beyond_keep_are_pruned(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path, keep_versions=2)
    versions = []
    for i in range(4):
        (docs / f"more{i}.txt").write_text(f"Extra sentence number {i}.\n", encoding="utf-8")
        versions.append(build(store, "kb", [docs], replace=True).version)
    kept = sorted(p.name for p in (tmp_path / "kb" / "versions").iterdir())
    assert kept == sorted(versions[-2:])


def test_bad_index_parameters_and_empty_inputs_are_input_errors(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path)
    with pytest.raises(InputError, match="unknown hnsw index parameter"):
        build(store, "kb", [docs], kind="hnsw", index_params={"bogus": 1})
    with pytest.raises(InputError, match="no files or folders given"):
        build(store, "kb", [])
    assert store.infos() == []


def test_hnsw_and_ivfpq_banks_are_saved_and_loaded(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": f"r{i}", "text": f"Sentence number {i} of the test."}) + "\n" for i in range(300)), encoding="utf-8")
    store = BankStore(tmp_path / "banks")
    for kind in ("hnsw", "ivfpq"):
        params = {"nlist": 4, "m": 4, "nbits": 4} if kind == "ivfpq" else None
        info = build(store, kind, [rows], kind=kind, index_params=params, split=False)
        assert info.index["kind"] == kind and info.index["file"] == "index.faiss"
        bank = store.load(kind, encoder_identity=IDENTITY)
        scores, found = bank.search(hash_embed(["Sentence number 7 of the test."]), k=5)
        assert bank.texts[found[0, 0]] == "Sentence number 7 of the test." and bank.provenance(int(found[0, 0])).doc_id == "r7"
        assert np.allclose(bank.vectors, hash_embed(bank.texts), atol=1e-6) if kind == "hnsw" else bank.vectors.shape == (300, DIM)


def test_vectors_outlive_the_bank_object(tmp_path: Path, docs: Path) -> None:
    import gc

    store = BankStore(tmp_path)
    build(store, "kb", [docs])
    texts = store.load("kb", encoder_identity=IDENTITY).texts
    vectors = store.load("kb", encoder_identity=IDENTITY).vectors  # the bank and its index are garbage now
    gc.collect()
    hash_embed(["filler"] * 1000)  # reuse freed memory, if it were freed
    assert np.array_equal(vectors, hash_embed(texts)) and not vectors.flags.writeable


def test_an_embed_returning_the_wrong_shape_is_refused(tmp_path: Path, docs: Path) -> None:
    with pytest.raises(BankError, match=r"embed returned vectors of shape \(5, 3\)"):
        build(BankStore(tmp_path), "kb", [docs], embed=lambda texts: np.ones((len(texts), 3), np.float32))


def test_the_shipped_default_bank_is_the_bundles_bank(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    bundle = ROOT / "cubeqa" / "bundles" / "default"
    encoder = EncoderIdentity.from_dict(json.loads((bundle / "manifest.json").read_text())["encoder"])
    store = BankStore(tmp_path / "empty-root", builtin=default_builtin())
    [info] = store.infos()
    assert info.builtin and info.name == "default" and info.sentences == 11861
    bank = store.load("default", encoder_identity=encoder)
    texts = [json.loads(line) for line in (bundle / "bank.jsonl").read_text(encoding="utf-8").splitlines()]
    assert bank.texts == texts
    assert np.array_equal(bank.vectors, load_file(str(bundle / "bank.safetensors"))["vectors"])
    first = json.loads((ROOT / "data" / "squad_sent_train.jsonl").read_text(encoding="utf-8").split("\n", 1)[0])
    assert bank.provenance(0).doc_id == first["answer_id"] and texts[0] == first["answer"]
    with pytest.raises(BankError, match="built in and cannot be removed"):
        store.remove("default")
    assert not list((ROOT / "cubeqa" / "banks").rglob("vectors.safetensors"))  # vectors are the bundle's, not a copy
    assert bank.lexical is not None and bank.lexical.sentences == 11861  # the built-in bank has its lexical index too


def test_adding_to_the_builtin_bank_makes_an_own_bank_that_shadows_it(tmp_path: Path, docs: Path) -> None:
    builtin = tmp_path / "builtin"
    BankStore(tmp_path / "seed").build("seed", [docs / "pumps.txt"], embed=hash_embed, encoder_identity=IDENTITY)
    seed = tmp_path / "seed" / "seed"
    (builtin / "versions").mkdir(parents=True)
    version = (seed / "CURRENT").read_text().strip()
    (seed / "versions" / version).rename(builtin / "versions" / version)
    (builtin / "CURRENT").write_text(version)
    store = BankStore(tmp_path / "root", builtin={"base": builtin})
    with pytest.raises(BankExists):
        build(store, "base", [docs])
    info = store.add("base", [docs / "valves.md"], embed=hash_embed, encoder_identity=IDENTITY)
    assert not info.builtin and info.sentences == 5 and store.resolve("base") == info.version


def test_a_builtin_bank_whose_vectors_changed_is_refused(tmp_path: Path) -> None:
    from pipeline.knowledge.builtin import bank_from_bundle

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    texts = ["One sentence.", "Another sentence."]
    (bundle / "bank.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
    (bundle / "manifest.json").write_text(json.dumps({"encoder": IDENTITY.to_dict()}), encoding="utf-8")
    from safetensors.numpy import save_file

    save_file({"vectors": hash_embed(texts)}, str(bundle / "bank.safetensors"))
    bank_from_bundle(bundle, tmp_path / "banks" / "tiny", name="tiny")
    store = BankStore(tmp_path / "root", builtin={"tiny": tmp_path / "banks" / "tiny"})
    assert store.load("tiny", encoder_identity=IDENTITY).texts == texts
    save_file({"vectors": hash_embed(["x", "y"])}, str(bundle / "bank.safetensors"))
    with pytest.raises(BankCorrupt, match="changed since bank 'tiny'"):
        store.load("tiny", encoder_identity=IDENTITY)


def test_list_reports_a_broken_bank_beside_the_good_ones(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path)
    build(store, "good", [docs])
    broken = build(store, "broken", [docs])
    (tmp_path / "broken" / "versions" / broken.version / MANIFEST).write_text("{not json", encoding="utf-8")
    infos = {info.name: info for info in store.infos()}
    assert infos["good"].problem is None and infos["good"].sentences == 5
    assert "BankCorrupt" in infos["broken"].problem and "not valid JSON" in infos["broken"].problem
    with pytest.raises(BankCorrupt, match="not valid JSON"):
        store.load("broken", encoder_identity=IDENTITY)


def test_versions_lists_each_kept_version_newest_first_with_its_counts_and_size(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path / "banks")
    first = build(store, "manual", [docs / "pumps.txt"])
    second = store.add("manual", [docs / "valves.md"], embed=hash_embed, encoder_identity=IDENTITY)
    kept = store.versions("manual")
    assert [(v.version, v.current, v.parent) for v in kept] == [(second.version, True, first.version), (first.version, False, None)]
    assert [(v.sentences, v.documents) for v in kept] == [(5, 2), (3, 1)]
    assert kept[0].size_bytes == second.size_bytes and kept[0].built_at == second.built_at
    (store.root / "manual" / "versions" / "partial").mkdir()  # a version never completed is not listed
    assert len(store.versions("manual")) == 2
    with pytest.raises(BankNotFound):
        store.versions("nothing")
