"""A bank built from a real mkdocs docs folder (Starlette's, tests/data/docs/starlette) holds prose only: no heading,
code line or directive as a sentence and no fragment of a longer sentence. The checks read the Markdown source with
plain line rules of their own, not with the parser under test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_knowledge_helpers import IDENTITY, hash_embed

from pipeline.knowledge.bankfiles import SENTENCES
from pipeline.knowledge.store import BankStore

ROOT = Path(__file__).resolve().parents[2]
STARLETTE = ROOT / "tests" / "data" / "docs" / "starlette"
PAGES = sorted(STARLETTE.glob("*.md"))


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The sentence records of a bank built from the whole folder."""
    root = tmp_path_factory.mktemp("banks")
    info = BankStore(root).build("starlette", [STARLETTE], embed=hash_embed, encoder_identity=IDENTITY)
    assert info.notes == ()  # every file of the folder is Markdown and readable
    lines = (root / "starlette" / "versions" / info.version / SENTENCES).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def source_lines() -> tuple[list[list[str]], list[str]]:
    """(the non-blank lines of each ``` fence, the lines outside fences) of every page."""
    fences: list[list[str]] = []
    prose: list[str] = []
    for page in PAGES:
        fenced = False
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.strip().startswith("```"):
                fenced = not fenced
                if fenced:
                    fences.append([])
            elif line.strip():
                (fences[-1] if fenced else prose).append(line.strip())
    return fences, prose


def plain(markdown: str) -> str:
    """Inline Markdown as words: links (inline or by reference) as their text, backticks and emphasis dropped."""
    return " ".join(re.sub(r"[`*]", "", re.sub(r"\[([^\]]*)\](\([^)]*\)|\[[^\]]*\])", r"\1", markdown)).split())


def test_no_heading_is_a_sentence_and_headings_become_section_paths(bank: list[dict]) -> None:
    _, prose = source_lines()
    headings = {plain(m.group(1)) for line in prose if (m := re.match(r"^#{1,6}\s+(.+?)\s*#*$", line))}
    texts = {r["text"] for r in bank}
    assert len(headings) > 150 and not headings & texts
    sections = {part for r in bank for part in r["provenance"].get("section", ())}
    assert {"GZipMiddleware", "Host-based routing", "Request"} <= sections <= headings
    gzip = "On streaming responses, the middleware will buffer the response before compressing it."  # a ??? info box
    assert [r["provenance"]["section"] for r in bank if r["text"] == gzip] == [["GZipMiddleware"]]


def test_no_code_line_and_no_directive_is_a_sentence(bank: list[dict]) -> None:
    fences, _ = source_lines()
    texts = [r["text"] for r in bank]
    code_lines = {line for fence in fences for line in fence}
    line_pairs = {f"{a} {b}" for fence in fences for a, b in zip(fence, fence[1:])}
    assert len(fences) > 150 and not code_lines & set(texts)
    assert not [t for t in texts if any(pair in t for pair in line_pairs)]  # no code block leaked into prose
    markers = ("!!!", "???", ":::", "```", "show_root_heading", "heading_level", "API Reference", "toc_depth")
    assert not [t for t in texts if any(marker in t for marker in markers)]
    assert "The status_code parameter is not supported with WebSockets." in texts  # an !!! note's prose stays


def test_no_sentence_is_a_fragment_of_a_longer_one(bank: list[dict]) -> None:
    texts = [r["text"] for r in bank]
    spans = {span for page in PAGES for span in re.findall(r"`([^`\n]+)`", page.read_text(encoding="utf-8"))}
    lower = [t for t in texts if t[0].islower() and not any(t.startswith(span) for span in spans)]
    assert not lower  # a lower-case start is only ever a code span ("scope is a dict ..."), never a cut-off tail
    assert not [t for t in texts if len(t.split()) < 2 or re.search(r"\s[.,;:]$", t)]  # "eg.", "The ."
    assert not [t for t in texts if any(t != other and other.endswith(" " + t) for other in texts)]
    short = [t for t in texts if len(t) < 25]
    assert len(short) / len(texts) < 0.05
    whole = "Starlette includes an application class Starlette that nicely ties together all of its other functionality"
    assert whole + "." in texts  # "`Starlette`" in the source
