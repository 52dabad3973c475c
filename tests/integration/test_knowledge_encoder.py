"""A bank of a few paragraphs, embedded by the real teacher, answers a question about them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import IncompatibleBank
from pipeline.knowledge.store import BankStore

PUMP = """# Garden pump manual

The pump runs on a twelve volt battery. Charge the battery overnight before the first use.

The intake filter must be cleaned every two weeks. A clogged filter makes the motor overheat.
"""
BAKERY = """The bakery opens at seven in the morning. Sourdough bread is baked on Tuesdays and Fridays.
Gluten-free cakes can be ordered two days in advance.
"""


@pytest.mark.slow
def test_a_bank_of_paragraphs_answers_with_the_right_sentence_and_its_provenance(tmp_path: Path, encoder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text(PUMP, encoding="utf-8")
    (docs / "bakery.txt").write_text(BAKERY, encoding="utf-8")
    store = BankStore(tmp_path / "banks")
    embed = lambda texts: encoder.encode(texts).vectors  # noqa: E731
    info = store.build("house", [docs], embed=embed, encoder_identity=encoder.identity)
    assert info.sentences == 7 and info.documents == 2
    bank = store.load("house", encoder_identity=encoder.identity)
    questions = ["How often should the intake filter be cleaned?", "On which days is sourdough baked?"]
    scores, rows = bank.search(encoder.encode(questions).vectors, k=3)
    assert bank.texts[rows[0, 0]] == "The intake filter must be cleaned every two weeks."
    assert bank.texts[rows[1, 0]] == "Sourdough bread is baked on Tuesdays and Fridays."
    assert scores[0, 0] > scores[0, 1]
    prov = bank.provenance(int(rows[0, 0]))
    assert prov.doc_id == str(docs / "pump.md") and prov.title == "Garden pump manual" and prov.position == 2
    assert prov.section == ("Garden pump manual",)
    assert prov.before == ("The pump runs on a twelve volt battery.", "Charge the battery overnight before the first use.")
    assert prov.after == ("A clogged filter makes the motor overheat.",)


@pytest.mark.slow
def test_the_default_bank_refuses_another_encoder_and_serves_the_teacher(tmp_path: Path, encoder) -> None:
    from dataclasses import replace

    from pipeline.knowledge.builtin import default_builtin

    store = BankStore(tmp_path / "root", builtin=default_builtin())
    bank = store.load("default", encoder_identity=encoder.identity)
    question = "To whom did the virgin mary allegedly appear in 1858 in lourdes france?"
    _, rows = bank.search(encoder.encode([question]).vectors, k=1)
    assert bank.provenance(int(rows[0, 0])).doc_id == "8af71f3480a6"
    with pytest.raises(IncompatibleBank, match="was embedded with encoder"):
        store.load("default", encoder_identity=replace(encoder.identity, weights_hash="0" * 16))
