"""Structured blocks -> bank sentences: the one set of rules all structured formats (Markdown, reST, HTML, docx) share.

A format reader only produces blocks: a heading (with its level), a prose paragraph or a list item, each as inline
parts where code spans and link texts are marked protected. The rules here then make sentences:

- a heading is never a sentence; it sets the section path (the headings above, outermost first) of what follows;
- a prose block is split into sentences; protected spans are swapped for placeholders the splitter cannot cut
  (".netrc", "`.get()`", "httpx.Client.get()") and restored in the sentences afterwards;
- a list item is a sentence only when it reads as one: it ends with . ! ? (closing quotes or brackets allowed)
  and holds at least 3 words, or it holds at least 8 words; a bare "Basic/Digest Authentication" is not;
- a sentence needs two words of its own, outside code spans and link texts: a shorter piece the splitter cut off
  ("eg.", "`['*']`.", "(RFC2109)") joins the sentence before it, and a block that is only code or links
  ("`app.state`", "GitHub | Documentation") gives no sentence;
- a piece starting with a lower-case letter continues the sentence before it (the splitter cut at an abbreviation
  it does not know: "to eg. share `session` functionality.");
- with `split=False` a prose block or accepted list item is one sentence, whitespace normalised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.errors import EmptyDocument
from pipeline.knowledge.formats.document import Document
from pipeline.knowledge.segment import has_words, normalise, split_sentences

Kind = Literal["heading", "prose", "item"]
ITEM_MIN_WORDS = 3  # a list item ending a sentence: "The valve is red." yes, "See below." no
ITEM_LONG_WORDS = 8  # a list item this long is prose even without a final stop
OWN_WORDS = 2  # "eg.", "(RFC2109)" or a lone code span are not sentences but parts of their neighbour
_PLACEHOLDER = re.compile("\ue000([a-z]+)\ue001")  # private-use marks: never text, never a sentence end to pysbd
_ENDS_SENTENCE = re.compile(r"[.!?][\"'”’)\]»]*$")


@dataclass(frozen=True)
class Block:
    """A heading, prose paragraph or list item: its inline parts as (text, protected) and a heading's level."""

    kind: Kind
    parts: tuple[tuple[str, bool], ...]
    level: int = 0

    @property
    def text(self) -> str:
        """The block's words, protected parts included, whitespace normalised."""
        return normalise("".join(text for text, _ in self.parts))


class Inline:
    """Collects one block's inline text; code spans and link texts are added as protected parts."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, bool]] = []

    def add(self, text: str, protected: bool = False) -> None:
        """Appends text; a protected part is kept whole by the splitter."""
        if text:
            self.parts.append((text, protected))

    def take(self, kind: Kind, level: int = 0) -> Block | None:
        """The collected parts as a block (None when they hold no words), and a fresh start."""
        block = Block(kind, tuple(self.parts), level) if has_words("".join(t for t, _ in self.parts)) else None
        self.parts = []
        return block


@dataclass(frozen=True)
class Structured:
    """A structured document's sentences, each with its section path, and its title (the first heading)."""

    title: str | None
    sentences: tuple[str, ...]
    sections: tuple[tuple[str, ...], ...]


def _index_name(index: int) -> str:
    """0 -> "a", 25 -> "z", 26 -> "aa": placeholder names without digits, which the splitter reads as numbers."""
    letters = ""
    while True:
        index, digit = divmod(index, 26)
        letters = chr(ord("a") + digit) + letters
        if not index:
            return letters
        index -= 1


def protected_sentences(parts: Iterable[tuple[str, bool]], split: bool = True) -> list[str]:
    """The sentences of inline parts, protected parts never cut; a piece with fewer than OWN_WORDS words of its own, or
    starting in lower case, joins the sentence before it (a short first piece joins the one after it); a block of
    short pieces only gives none."""
    atoms: dict[str, str] = {}
    pieces = []
    for text, protected in parts:
        if protected and text.strip():
            name = _index_name(len(atoms))
            atoms[name] = normalise(text)
            pieces.append(f"\ue000{name}\ue001")
        else:
            pieces.append(text)
    joined = "".join(pieces)
    sentences: list[str] = []
    pending = ""  # short pieces before the first full sentence
    for piece in split_sentences(joined) if split else [normalise(joined)]:
        if _own_words(piece) >= OWN_WORDS and not (sentences and piece[:1].islower()):
            sentences.append(f"{pending} {piece}".strip())
            pending = ""
        elif sentences:
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            pending = f"{pending} {piece}".strip()
    return [_PLACEHOLDER.sub(lambda m: atoms[m.group(1)], s) for s in sentences]


def _own_words(piece: str) -> int:
    """Whitespace-separated words holding a letter or digit, outside protected spans."""
    return sum(has_words(word) for word in _PLACEHOLDER.sub(" ", piece).split())


def is_sentence_item(text: str) -> bool:
    """Whether a list item reads as a sentence (see the module docstring)."""
    words = len(text.split())
    return words >= ITEM_LONG_WORDS or (words >= ITEM_MIN_WORDS and bool(_ENDS_SENTENCE.search(text)))


def structured(blocks: Iterable[Block], split: bool = True) -> Structured:
    """Sentences and section paths of a document's blocks, by the rules of the module docstring."""
    title: str | None = None
    path: list[tuple[int, str]] = []  # (level, heading text), outermost first
    sentences: list[str] = []
    sections: list[tuple[str, ...]] = []
    for block in blocks:
        if block.kind == "heading":
            text = block.text
            title = title or text
            while path and path[-1][0] >= block.level:
                path.pop()
            path.append((block.level, text))
            continue
        if block.kind == "item" and not is_sentence_item(block.text):
            continue
        found = protected_sentences(block.parts, split)
        sentences.extend(found)
        sections.extend([tuple(text for _, text in path)] * len(found))
    return Structured(title, tuple(sentences), tuple(sections))


def document_of(path: Path, blocks: Iterable[Block], split: bool, title: str | None = None) -> Document:
    """A structured file as one Document (sentences with their section paths), or EmptyDocument naming the file."""
    found = structured(blocks, split)
    if not found.sentences:
        raise EmptyDocument(f"{path}: no sentences (only headings, code, tables or markup)")
    return Document(doc_id=str(path), title=title or found.title, source=str(path), sentences=found.sentences,
                    sections=found.sections)
