"""The lexical (BM25) index of a bank version, and the fused search over it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_knowledge_helpers import IDENTITY, hash_embed

from pipeline.errors import BankCorrupt
from pipeline.knowledge import lexical as lexical_module
from pipeline.knowledge.bankfiles import MANIFEST, file_sha256
from pipeline.knowledge.fusion import Fusion, MemoryBank
from pipeline.knowledge.lexical import MATRIX, VOCAB, LexicalIndex, tokenize
from pipeline.knowledge.store import BankStore

TEXTS = ["The pump runs on twelve volts.", "Pumps need a fuse.", "The valve is red.", "Close the valve before service."]


def test_tokens_are_stemmed_without_stop_words() -> None:
    assert tokenize(["The pumps are running in the valves"]) == [
        ["pump", "run", "valv"]
    ]  # bm25s's 33 English stop words


def test_scores_match_bm25s_and_survive_a_save_load_round_trip(tmp_path: Path) -> None:
    import bm25s

    index = LexicalIndex.build(TEXTS)
    reference = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    reference.index(tokenize(TEXTS), show_progress=False)
    question = tokenize(["Which pump needs a fuse?"])[0]
    np.testing.assert_allclose(index.scores(question), reference.get_scores(question), rtol=1e-6)
    index.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MATRIX, VOCAB])
    assert set(load_file(str(tmp_path / MATRIX))) == {
        "data",
        "indices",
        "indptr",
    }  # safetensors and JSON: nothing to unpickle
    assert json.loads((tmp_path / VOCAB).read_text())["params"]["stemmer"] == "english"
    again = LexicalIndex.load(tmp_path)
    np.testing.assert_array_equal(again.scores(question), index.scores(question))
    assert again.scores(["zzz-unknown"]).tolist() == [0.0] * len(TEXTS)


def tiny_bank() -> tuple[MemoryBank, np.ndarray]:
    """A bank where the question's vector is nearest a wrong sentence and its words pick the right one."""
    texts = ["The weather in spring is mild.", "Mercury boils at 357 degrees.", "Cats sleep a lot."]
    vectors = np.array([[1, 0, 0], [0.6, 0.8, 0], [0.8, 0, 0.6]], np.float32)
    return MemoryBank(texts, vectors), np.array([[1, 0, 0]], np.float32)


def test_fusion_ranks_the_lexically_matching_sentence_first_where_dense_alone_is_wrong() -> None:
    bank, query = tiny_bank()
    question = ["At what temperature does mercury boil?"]
    dense = bank.hybrid(query, question, 3, Fusion(0.5), ranking="dense")
    assert dense.rows[0].tolist() == [0, 2, 1]  # the dense search alone answers with the weather, the right one last
    hits = bank.hybrid(query, question, 2, Fusion(0.5, depth=2))  # the right sentence is a lexical-only candidate
    assert hits.rows[0].tolist() == [1, 0]
    assert hits.dense[0].tolist() == pytest.approx([0.6, 1.0])  # its cosine computed exactly from the stored vectors
    assert hits.lexical is not None and hits.lexical[0].tolist() == pytest.approx(
        [1.0, 0.0]
    )  # BM25 / the question's max
    assert hits.scores[0].tolist() == pytest.approx([0.6 + 0.5 * 1.0, 1.0])
    assert bank.hybrid(query, None, 1, Fusion(0.5)).rows[0, 0] == 0  # no question text: dense search


def test_a_question_sharing_no_word_with_the_bank_ranks_by_cosine() -> None:
    bank, query = tiny_bank()
    hits = bank.hybrid(query, ["zzz qqq"], 3, Fusion(0.5))
    assert hits.rows[0].tolist() == [0, 2, 1] and hits.scores[0].tolist() == pytest.approx(hits.dense[0].tolist())


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "pumps.txt").write_text(" ".join(TEXTS) + "\n", encoding="utf-8")
    return folder


def build(store: BankStore, docs: Path, replace: bool = False):
    return store.build("manual", [docs], embed=hash_embed, encoder_identity=IDENTITY, replace=replace)


def test_the_store_writes_the_lexical_index_with_the_version_and_lists_its_hashes(tmp_path: Path, docs: Path) -> None:
    store = BankStore(tmp_path / "banks")
    info = build(store, docs)
    vdir = tmp_path / "banks" / "manual" / "versions" / info.version
    manifest = json.loads((vdir / MANIFEST).read_text())
    assert manifest["files"]["lexical"] == {MATRIX: file_sha256(vdir / MATRIX), VOCAB: file_sha256(vdir / VOCAB)}
    bank = store.load("manual", encoder_identity=IDENTITY)
    assert bank.lexical is not None and bank.lexical.sentences == len(TEXTS)
    hits = bank.hybrid(hash_embed(["unrelated"]), ["Which valve is red?"], 2, Fusion(0.5))
    assert bank.texts[hits.rows[0, 0]] == "The valve is red."
    (vdir / VOCAB).write_text((vdir / VOCAB).read_text().replace("valv", "valx"))
    with pytest.raises(BankCorrupt, match="changed"):
        store.load("manual", encoder_identity=IDENTITY)


def test_a_build_killed_while_writing_the_lexical_index_leaves_the_old_version_serving(
    tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BankStore(tmp_path / "banks")
    first = build(store, docs)
    (docs / "more.txt").write_text("Replace the filter yearly.\n", encoding="utf-8")

    def dies(self: LexicalIndex, directory: Path) -> None:
        (directory / MATRIX).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(LexicalIndex, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        build(store, docs, replace=True)
    assert store.resolve("manual") == first.version
    assert [p.name for p in (tmp_path / "banks" / "manual" / "versions").iterdir()] == [first.version]
    monkeypatch.undo()
    second = build(store, docs, replace=True)
    assert second.version != first.version and not list((tmp_path / "banks" / "manual").glob(".build-*"))


def test_a_version_without_a_lexical_index_loads_dense_only_with_a_warning(
    tmp_path: Path, docs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BankStore(tmp_path / "banks")
    info = build(store, docs)
    vdir = tmp_path / "banks" / "manual" / "versions" / info.version
    manifest = json.loads((vdir / MANIFEST).read_text())
    del manifest["files"]["lexical"]
    (vdir / MANIFEST).write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        bank = store.load("manual", encoder_identity=IDENTITY)
    assert bank.lexical is None and "no lexical index" in caplog.text
    hits = bank.hybrid(hash_embed(["The valve is red."]), ["Which valve is red?"], 2, Fusion(0.5))
    assert hits.lexical is None and bank.texts[hits.rows[0, 0]] == "The valve is red."


def test_the_lexical_parameters_are_part_of_the_version(
    tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build(BankStore(tmp_path / "a"), docs)
    monkeypatch.setitem(lexical_module.PARAMS, "k1", 1.2)
    assert build(BankStore(tmp_path / "b"), docs).version != first.version


def test_a_sentence_is_indexed_with_its_title_and_section_path() -> None:
    from pipeline.knowledge.documents import Sentence
    from pipeline.knowledge.lexical import indexed_text
    from pipeline.knowledge.provenance import Provenance

    under = Sentence("Uses a 307 status code by default.", Provenance("responses.md", title="Responses",
                                                                      section=("Responses", "RedirectResponse")))
    plain = Sentence("Uses a 200 status code by default.", Provenance("x.md", title="Other"))
    assert indexed_text(under) == "Responses RedirectResponse Uses a 307 status code by default."  # the title once
    assert indexed_text(Sentence("A row.", Provenance("id"))) == "A row."  # no title, no section: the text alone
    index = LexicalIndex.of_sentences([under, plain])
    scores = index.scores(tokenize(["What status code does a redirect response use by default?"])[0])
    assert scores[0] > scores[1]  # the heading's word is what tells them apart
