"""Structured documents: headings as section paths, code and markup never sentences, inline code never cut,
in Markdown, reStructuredText, HTML and .docx alike; .txt newlines, --no-split, unsupported and unreadable files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import EmptyDocument, InputError
from pipeline.knowledge.documents import ReadReport, bank_sentences, read_documents
from pipeline.knowledge.formats.blocks import is_sentence_item, protected_sentences
from pipeline.knowledge.provenance import Provenance

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "tests" / "data" / "docs"


def sentences_of(*paths: Path, split: bool = True, report: ReadReport | None = None, skip_bad: bool = False) -> list:
    return list(bank_sentences(read_documents(list(paths), split=split, report=report, skip_bad=skip_bad)))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


MKDOCS_PAGE = """---
title: front matter
---
# Authentication

??? abstract "API Reference"
    ::: httpx.BasicAuth
        options:
            show_root_heading: true

HTTPX can be configured to use a `.netrc` config file for authentication. Call `httpx.Client.get()` to send it.

## Basic/Digest

* Basic/Digest Authentication
* NTLM
* The client sends the credentials with every request.

!!! note "Keep secrets"
    Never commit a `.netrc` file.

    A second paragraph stays prose too.

| option | default |
|--------|---------|
| `auth` | `None`  |

```python
client = httpx.Client(auth=("user", "pass"))
```

    indented = "code"

<div class="grid">An HTML block is markup.</div>

### Digest

```{note}
:class: dropdown
Digest hashes the password with a server nonce.
```

```{code-block} python
not = "prose"
```

:::{tip}
Colon fences keep their prose.
:::
"""


def test_markdown_keeps_prose_with_its_section_path_and_drops_markup(tmp_path: Path) -> None:
    found = sentences_of(write(tmp_path / "auth.md", MKDOCS_PAGE))
    assert [(s.text, s.provenance.section) for s in found] == [
        ("HTTPX can be configured to use a .netrc config file for authentication.", ("Authentication",)),
        ("Call httpx.Client.get() to send it.", ("Authentication",)),
        ("The client sends the credentials with every request.", ("Authentication", "Basic/Digest")),
        ("Never commit a .netrc file.", ("Authentication", "Basic/Digest")),
        ("A second paragraph stays prose too.", ("Authentication", "Basic/Digest")),
        ("Digest hashes the password with a server nonce.", ("Authentication", "Basic/Digest", "Digest")),
        ("Colon fences keep their prose.", ("Authentication", "Basic/Digest", "Digest")),
    ]
    assert found[0].provenance.title == "Authentication"


def test_nested_and_tab_indented_admonitions_keep_their_prose_and_drop_their_code(tmp_path: Path) -> None:
    doc = write(tmp_path / "boxes.md", (
        '# T\n\n???+ warning "Outer"\n\tOuter prose is here.\n\n\t!!! tip\n\t    Inner prose is here too.\n\n'
        "\t```python\n\tx = 'code in a box'\n\t```\n\nAfter the box, prose again.\n"
    ))
    expected = ["Outer prose is here.", "Inner prose is here too.", "After the box, prose again."]
    assert [s.text for s in sentences_of(doc)] == expected


def test_a_shorter_heading_level_closes_the_deeper_sections(tmp_path: Path) -> None:
    doc = write(tmp_path / "levels.md", (
        "# A\n\n## B\n\n### C\n\nIn C now.\n\n## D\n\nIn D now.\n\nSetext E\n===\n\nIn E now.\n\n"
        '=== "Tab one"\n\n    In a tab now.\n'
    ))
    assert [(s.text, s.provenance.section) for s in sentences_of(doc)] == [
        ("In C now.", ("A", "B", "C")), ("In D now.", ("A", "D")),
        ("In E now.", ("Setext E",)), ("In a tab now.", ("Setext E",)),
    ]


@pytest.mark.parametrize(("item", "sentence"), [
    ("Basic/Digest Authentication", False), ("NTLM", False), ("See below.", False), ("WebSocket support.", False),
    ("The valve is red.", True), ('It says "stop."', True),
    ("Use asyncio.iscoroutinefunction on Python 3.12 and older releases", True),
])
def test_a_list_item_is_a_sentence_only_when_it_reads_as_one(item: str, sentence: bool) -> None:
    assert is_sentence_item(item) is sentence


def test_short_cut_off_pieces_join_their_sentence_and_code_alone_is_no_sentence(tmp_path: Path) -> None:
    doc = write(tmp_path / "cut.md", (
        "A list of origins that may make requests. eg. `['https://example.org']`. You can use `['*']`.\n\n"
        "Cookies are ignored when invalid. (RFC2109)\n\n"
        "A common subclass, to eg. share `session` functionality.\n\n"
        "`app.state`\n\n[GitHub](https://github.com) | [Documentation](https://example.org)\n"
    ))
    assert [s.text for s in sentences_of(doc)] == [
        "A list of origins that may make requests. eg. ['https://example.org'].", "You can use ['*'].",
        "Cookies are ignored when invalid. (RFC2109)", "A common subclass, to eg. share session functionality.",
    ]


def test_many_protected_spans_are_each_restored_in_place() -> None:
    names = [f"mod{n}.fn()" for n in range(60)]  # past 26 placeholders: "aa", "ab", ...
    parts = [("Call ", False)] + [part for name in names for part in ((name, True), (", ", False))] + [("then stop.", False)]
    assert protected_sentences(parts) == ["Call " + ", ".join(names) + ", then stop."]


def test_restructuredtext_sections_literal_blocks_and_roles() -> None:
    doc = DOCS / "requests" / "authentication.rst"
    found = sentences_of(doc)
    texts = [s.text for s in found]
    by_text = {s.text: s.provenance for s in found}
    netrc = ("Requests will search for the netrc file at ~/.netrc, ~/_netrc, or at the path specified by the NETRC "
             "environment variable.")
    assert netrc in texts
    assert by_text[netrc].section == ("Authentication", "Basic Authentication", "netrc Authentication")
    assert by_text[netrc].title == "Authentication"
    assert "To do so, subclass AuthBase and implement the __call__() method:" in texts  # :class:`AuthBase <...>`
    assert not [t for t in texts if ">>>" in t or "HTTPBasicAuth('user'" in t]  # literal blocks dropped
    source = doc.read_text(encoding="utf-8").splitlines()
    headings = {line for line, under in zip(source, source[1:]) if len(under) >= 3 and set(under) <= set("=-~^")}
    assert headings and not headings & set(texts)
    faq = {s.text: s.provenance.section for s in sentences_of(DOCS / "requests" / "faq.rst")}
    assert faq["Users who have been unable to migrate should pin to requests<2.28."] == (
        "Frequently Asked Questions", "Python 2 Support?")


def test_sphinx_directives_docutils_does_not_know_are_dropped(tmp_path: Path) -> None:
    doc = write(tmp_path / "api.rst", (
        "Client\n======\n\n.. note::\n\n   Admonition prose is kept.\n\n.. code-block:: python\n\n   x = 1\n\n"
        ".. automodule:: httpx\n   :members:\n\nUse :func:`httpx.get` for one request.\n\n"
        "+------+\n| cell |\n+------+\n\n.. toctree::\n\n   intro\n"
    ))
    assert [(s.text, s.provenance.section) for s in sentences_of(doc)] == [
        ("Admonition prose is kept.", ("Client",)), ("Use httpx.get for one request.", ("Client",)),
    ]


def test_html_reads_the_main_content_not_the_navigation() -> None:
    found = sentences_of(DOCS / "html" / "idle-help.html")
    texts = [s.text for s in found]
    by_text = {s.text: s.provenance for s in found}
    sentence = "Keybindings are selected in the Configure IDLE dialog."
    assert by_text[sentence].section == ("IDLE", "Editing and Navigation", "Key bindings")
    assert by_text[sentence].title.startswith("IDLE")
    chrome = ("Previous topic", "Next topic", "This Page", "Report a Bug", "Show Source", "Last updated", "Found a bug")
    assert not [t for t in texts if any(part in t for part in chrome)]
    assert not [t for t in texts if "¶" in t or "idle.py [-c command]" in t]  # permalinks and <pre> dropped
    assert "Menus" not in texts and "Key bindings" not in texts


def test_html_without_a_main_element_drops_navigation_header_footer_and_scripts(tmp_path: Path) -> None:
    page = write(tmp_path / "page.html", (
        "<html><head><title>Pump</title><style>p { color: red }</style></head><body>"
        "<header>Acme pumps home page banner text</header><nav><ul><li>Home page of the whole site here</li></ul></nav>"
        "<h1>Pump</h1><div>The pump uses <code>pump.start()</code> to run. It is quiet.<p>Oil it monthly.</p></div>"
        "<ul><li>Quiet</li><li>The valve closes by itself.</li></ul><pre>pump.start()\n</pre>"
        "<table><tr><td>A table cell sentence.</td></tr></table><script>var x = 'a script sentence.';</script>"
        "<footer>Copyright of the pump company here.</footer></body></html>"
    ))
    assert [(s.text, s.provenance.section) for s in sentences_of(page)] == [
        ("The pump uses pump.start() to run.", ("Pump",)), ("It is quiet.", ("Pump",)), ("Oil it monthly.", ("Pump",)),
        ("The valve closes by itself.", ("Pump",)),
    ]


def make_docx(path: Path) -> Path:
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml.ns import qn
    from docx.oxml.shared import OxmlElement

    document = docx.Document()
    document.core_properties.title = "Requests authentication"
    document.add_heading("Authentication", level=1)
    document.add_paragraph("Many web services that require authentication accept HTTP Basic Auth.")
    document.add_heading("netrc Authentication", level=2)
    paragraph = document.add_paragraph("Requests will search for the netrc file at ")
    paragraph.add_run("~/.netrc").font.name = "Courier New"
    paragraph.add_run(" or at the path in the NETRC variable. See ")
    link = OxmlElement("w:hyperlink")
    relation = docx.opc.constants.RELATIONSHIP_TYPE.HYPERLINK
    link.set(qn("r:id"), paragraph.part.relate_to("https://requests.readthedocs.io", relation, is_external=True))
    run = OxmlElement("w:r")
    text = OxmlElement("w:t")
    text.text = "the docs. Thanks"
    run.append(text)
    link.append(run)
    paragraph._p.append(link)
    paragraph.add_run(" for more.")
    document.add_paragraph("Basic/Digest Authentication", style="List Bullet")
    document.add_paragraph("Digest Authentication is supported out of the box.", style="List Bullet")
    document.styles.add_style("Code", WD_STYLE_TYPE.PARAGRAPH)
    document.add_paragraph("s.trust_env = False", style="Code")
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "A table cell is not a sentence."
    document.save(str(path))
    return path


def test_docx_heading_styles_are_sections_and_code_tables_bullets_are_dropped(tmp_path: Path) -> None:
    found = sentences_of(make_docx(tmp_path / "auth.docx"))
    assert [(s.text, s.provenance.section) for s in found] == [
        ("Many web services that require authentication accept HTTP Basic Auth.", ("Authentication",)),
        ("Requests will search for the netrc file at ~/.netrc or at the path in the NETRC variable.",
         ("Authentication", "netrc Authentication")),
        ("See the docs. Thanks for more.", ("Authentication", "netrc Authentication")),
        ("Digest Authentication is supported out of the box.", ("Authentication", "netrc Authentication")),
    ]
    assert found[0].provenance.title == "Requests authentication"


def squad_lines(count: int) -> list[str]:
    lines = (ROOT / "data" / "squad_sent_val.jsonl").read_text(encoding="utf-8").splitlines()
    rows = (json.loads(line) for line in lines)
    return list(dict.fromkeys(row["answer"].strip() for row in rows))[:count]


def test_no_split_makes_each_line_of_a_txt_one_sentence_exactly(tmp_path: Path) -> None:
    lines = squad_lines(300)  # real sentences, some with "e.g." or "U.S." that a splitter may cut
    doc = write(tmp_path / "one-per-line.txt", "\n".join(lines) + "\n\n")
    found = sentences_of(doc, split=False)
    assert [s.text for s in found] == lines


def test_a_txt_whose_lines_end_sentences_is_read_a_line_at_a_time_with_a_hint(tmp_path: Path) -> None:
    lines = squad_lines(300)
    doc = write(tmp_path / "one-per-line.txt", "\n".join(lines) + "\n")
    report = ReadReport()
    found = sentences_of(doc, report=report)
    assert all(any(s.text in line for line in lines) for s in found)  # never two lines merged into one sentence
    assert len(found) >= len(lines)
    [hint] = report.hints
    assert "each line was read on its own" in hint and "one-per-line.txt" in hint and "\n" not in hint


def test_a_txt_of_wrapped_paragraphs_joins_lines_and_records_get_a_hint(tmp_path: Path) -> None:
    prose = write(tmp_path / "prose.txt", "The pump runs on twelve\nvolts. Check the fuse\nfirst.\n\nReplace it.\n")
    report = ReadReport()
    assert [s.text for s in sentences_of(prose, report=report)] == [
        "The pump runs on twelve volts.", "Check the fuse first.", "Replace it."]
    assert report.hints == []
    records = write(tmp_path / "titles.txt", "\n".join(f"Pump model {n} with valve {n + 1}" for n in range(30)) + "\n")
    report = ReadReport()
    sentences_of(records, report=report)
    assert len(report.hints) == 1 and "--no-split" in report.hints[0]


def test_unsupported_files_are_listed_and_skip_bad_reads_the_rest(tmp_path: Path) -> None:
    write(tmp_path / "good.md", "# Guide\n\nThe pump is quiet.\n")
    (tmp_path / "bad.txt").write_bytes("Caf\xe9 ouvert.\n".encode("latin-1"))
    for name in ("logo.png", "mkdocs.yml"):
        write(tmp_path / name, "x")
    with pytest.raises(InputError, match="bad.txt: not UTF-8"):
        sentences_of(tmp_path)
    report = ReadReport()
    assert [s.text for s in sentences_of(tmp_path, report=report, skip_bad=True)] == ["The pump is quiet."]
    unsupported, skipped = report.notes()
    assert unsupported == f"2 unsupported file(s) not read: {tmp_path / 'logo.png'}, {tmp_path / 'mkdocs.yml'}"
    assert skipped.startswith(f"skipped: {tmp_path / 'bad.txt'}: not UTF-8")


def test_a_folder_page_without_a_sentence_is_noted_but_named_alone_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "guide.md", "# Guide\n\nThe pump is quiet.\n")
    page = "# API\n\n::: pump.Pump\n    options:\n        members: true\n\n```\npump.start()\n```\n"
    api = write(tmp_path / "api.md", page)
    report = ReadReport()
    assert [s.text for s in sentences_of(tmp_path, report=report)] == ["The pump is quiet."]
    assert report.notes() == [f"1 file(s) without a sentence (empty, or only headings, code or markup): {api}"]
    with pytest.raises(EmptyDocument, match="api.md: no sentences"):
        sentences_of(api)


def test_structured_documents_without_split_give_one_sentence_per_paragraph(tmp_path: Path) -> None:
    doc = write(tmp_path / "guide.md", "# Guide\n\nThe pump is quiet.  It runs `pump.start()` daily.\n\n- NTLM\n")
    assert [s.text for s in sentences_of(doc, split=False)] == ["The pump is quiet. It runs pump.start() daily."]


def test_the_section_path_is_kept_only_when_there_is_one() -> None:
    with_section = Provenance(doc_id="d", section=("Guide", "Pumps"))
    assert Provenance.from_dict(with_section.to_dict()) == with_section
    assert Provenance.from_dict({"doc_id": "d", "position": 3}).section == ()  # a bank written before sections
    from pipeline.knowledge.bankfiles import sentence_line
    from pipeline.knowledge.documents import Sentence

    assert "section" not in json.loads(sentence_line(Sentence("A.", Provenance(doc_id="d"))))["provenance"]
