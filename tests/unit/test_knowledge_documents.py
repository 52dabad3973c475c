"""Reading documents into bank sentences: formats, provenance, duplicates and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.knowledge.documents import MAX_LINE, bank_sentences, expand, read_documents
from pipeline.knowledge.segment import split_sentences

ROOT = Path(__file__).resolve().parents[2]


def sentences_of(*paths: Path, split: bool = True) -> list:
    return list(bank_sentences(read_documents(list(paths), split=split)))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def make_pdf(path: Path, pages: list[str]) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Pump manual")
    for text in pages:
        pdf.add_page()
        if text:
            pdf.set_font("Helvetica", size=11)
            pdf.multi_cell(0, 8, text)
        else:
            pdf.rect(20, 20, 50, 50)  # a page with a drawing and no text, like a scan
    pdf.output(str(path))
    return path


def test_text_paragraphs_split_into_sentences_with_neighbours(tmp_path: Path) -> None:
    doc = write(tmp_path / "notes.txt", "Dr. Smith went to Washington.  He met Mr. Jones\nat 3 p.m. It rained!\n\nA second paragraph. Short.\n")
    found = sentences_of(doc)
    assert [s.text for s in found] == [
        "Dr. Smith went to Washington.", "He met Mr. Jones at 3 p.m.", "It rained!", "A second paragraph.", "Short.",
    ]
    third = found[2].provenance
    assert (third.doc_id, third.position, third.source) == (str(doc), 2, str(doc))
    assert third.before == ("Dr. Smith went to Washington.", "He met Mr. Jones at 3 p.m.")
    assert third.after == ("A second paragraph.", "Short.")
    assert found[0].provenance.before == () and found[-1].provenance.after == ()


def test_markdown_syntax_is_stripped_and_the_first_heading_titles_the_document(tmp_path: Path) -> None:
    doc = write(tmp_path / "guide.md", (
        "---\ntitle: x\n---\n# Pump guide\n\nThe **pump** needs [oil](http://oil.example) every `month`.\n"
        "Keep it dry.\n\n## Parts\n\n- The valve is red.\n- ![diagram](d.png) The hose is blue.\n\n"
        "```\ncode = 'not a sentence'\n```\n\n<div>html block</div>\n\n| part | colour |\n|---|---|\n| valve | red |\n"
    ))
    found = sentences_of(doc)
    assert [s.text for s in found] == ["The pump needs oil every month.", "Keep it dry.", "The valve is red.", "The hose is blue."]
    assert {s.provenance.title for s in found} == {"Pump guide"}
    assert [s.provenance.section for s in found] == [("Pump guide",)] * 2 + [("Pump guide", "Parts")] * 2


def test_markdown_without_heading_has_no_title(tmp_path: Path) -> None:
    found = sentences_of(write(tmp_path / "plain.md", "Just text here.\n"))
    assert [(s.text, s.provenance.title, s.provenance.section) for s in found] == [("Just text here.", None, ())]


def test_long_paragraphs_are_segmented_in_windows_without_losing_text() -> None:
    sentence = "The quick brown fox jumps over the lazy dog near the river bank today. "
    paragraph = sentence * 400  # 28 kB: one pysbd call would take seconds
    found = split_sentences(paragraph, window=1000)
    assert found == [sentence.strip()] * 400
    unbroken = "word " * 3000  # no sentence end at all: cut at spaces, every word kept
    pieces = split_sentences(unbroken, window=1000)
    assert len(pieces) > 1 and " ".join(pieces).split() == unbroken.split()


def test_jsonl_rows_are_documents_with_their_id_title_and_source(tmp_path: Path) -> None:
    doc = write(tmp_path / "kb.jsonl", "\n".join(json.dumps(r) for r in [
        {"id": "faq-1", "title": "Billing", "source": "https://x.example/faq", "text": "Invoices are sent monthly. Pay within 30 days."},
        {"text": "Support answers within a day."},
    ]) + "\n")
    found = sentences_of(doc)
    assert [s.text for s in found] == ["Invoices are sent monthly.", "Pay within 30 days.", "Support answers within a day."]
    assert (found[1].provenance.doc_id, found[1].provenance.title, found[1].provenance.source) == ("faq-1", "Billing", "https://x.example/faq")
    assert found[1].provenance.before == ("Invoices are sent monthly.",)
    assert found[2].provenance.doc_id == f"{doc}:2" and found[2].provenance.source == str(doc)


def test_unsplit_rows_keep_each_text_exactly(tmp_path: Path) -> None:
    text = "First part.  Second part,   with  spaces."
    doc = write(tmp_path / "rows.csv", f'id,text\na1,"{text}"\n')
    assert [s.text for s in sentences_of(doc, split=False)] == [text]
    assert [s.text for s in sentences_of(doc)] == ["First part.", "Second part, with spaces."]


def test_qa_files_give_their_answers_with_answer_id(tmp_path: Path) -> None:
    val = ROOT / "data" / "squad_sent_val.jsonl"
    rows = [json.loads(line) for line in val.read_text(encoding="utf-8").splitlines()]
    found = sentences_of(val, split=False)
    assert len(found) == len({r["answer"] for r in rows})  # one sentence per distinct answer
    assert found[0].text == rows[0]["answer"] and found[0].provenance.doc_id == rows[0]["answer_id"]


def test_duplicates_are_dropped_keeping_the_first_provenance(tmp_path: Path) -> None:
    first = write(tmp_path / "a.txt", "Water boils at 100 degrees. Ice melts.\n")
    second = write(tmp_path / "b.txt", "Ice   melts. Steam rises.\n")
    found = sentences_of(first, second)
    assert [s.text for s in found] == ["Water boils at 100 degrees.", "Ice melts.", "Steam rises."]
    assert found[1].provenance.doc_id == str(first)
    assert found[2].provenance.before == ("Ice melts.",)  # neighbours are the document's own sentences


def test_folders_are_read_recursively_by_suffix_skipping_hidden_entries(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "Alpha sentence.\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "b.md", "Beta sentence.\n")
    write(tmp_path / "sub" / "image.png", "not read")
    write(tmp_path / ".hidden.txt", "Hidden file.\n")
    (tmp_path / ".git").mkdir()
    write(tmp_path / ".git" / "c.txt", "Hidden folder.\n")
    assert expand([tmp_path]) == ([tmp_path / "a.txt", tmp_path / "sub" / "b.md"], [tmp_path / "sub" / "image.png"])
    assert [s.text for s in sentences_of(tmp_path)] == ["Alpha sentence.", "Beta sentence."]


def test_pdf_sentences_name_their_page(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "manual.pdf", ["The pump runs on twelve volts. Check the fuse first.", "Replace the filter every year."])
    found = sentences_of(pdf)
    assert [s.text for s in found] == ["The pump runs on twelve volts.", "Check the fuse first.", "Replace the filter every year."]
    assert found[2].provenance.source == f"{pdf}#page=2" and found[2].provenance.title == "Pump manual"


def test_pdf_without_split_keeps_each_paragraph_whole(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "manual.pdf", ["The pump runs on twelve volts. Check the fuse first."])
    assert [s.text for s in sentences_of(pdf, split=False)] == ["The pump runs on twelve volts. Check the fuse first."]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"", "is empty"),
        ("blank.md", b"\n\n   \n", "is empty"),
        ("binary.txt", bytes(range(256)) * 4, "binary file"),
        ("latin1.txt", "Caf\xe9 ouvert. Entr\xe9e libre.\n".encode("latin-1"), "not UTF-8 text"),
        ("notes.odt", b"PK\x03\x04", "unsupported file type '.odt'"),
        ("notes.docx", b"PK\x03\x04", "is not a readable .docx file"),
        ("markup.md", b"```\ncode only\n```\n", "no sentences"),
        ("bad.jsonl", b'{"text": "fine."}\n{not json\n', "bad.jsonl:2: not valid JSON"),
        ("notext.jsonl", b'{"body": "no text field."}\n', "no 'text' field"),
        ("notext.csv", b"id,body\n1,hello\n", "no 'text' column"),
        ("fake.pdf", b"hello, not a pdf", "is not a PDF"),
    ],
)
def test_bad_files_are_refused_with_one_line_naming_the_file(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        sentences_of(path)
    assert str(path.name) in str(caught.value) and "\n" not in str(caught.value)


def test_a_10_mb_line_is_refused_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "dump.txt"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("A normal first line.\n")
        handle.write("x" * (10 * 1024 * 1024) + "\n")
    assert 10 * 1024 * 1024 > MAX_LINE
    with pytest.raises(InputError, match=r"dump.txt:2: a line longer than"):
        sentences_of(path)
    jsonl = tmp_path / "dump.jsonl"
    jsonl.write_text(json.dumps({"text": "y" * (10 * 1024 * 1024)}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"dump.jsonl:1: a line longer than"):
        sentences_of(jsonl)


def test_a_pdf_without_text_is_refused(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "scan.pdf", [""])
    with pytest.raises(InputError, match=r"scan.pdf: no extractable text in 1 page\(s\)"):
        sentences_of(pdf)


def test_missing_paths_and_empty_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        expand([tmp_path / "nope.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .txt"):
        expand([tmp_path / "empty"])
