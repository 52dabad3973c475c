"""Sentences of a paragraph (pysbd) and whitespace normalisation.

pysbd's time grows with the square of its input (measured: 10 kB in 0.25 s, 30 kB in 2.4 s,
100 kB in 19 s), so long paragraphs are fed to it in windows: every sentence of a window but
its last (which may be cut by the window's end) is kept, and the next window starts there.
"""

from __future__ import annotations

import functools
import re

WINDOW = 4_000  # characters given to pysbd at once
_ALNUM = re.compile(r"\w")


def normalise(text: str) -> str:
    """Runs of whitespace (newlines, tabs, NBSP) as one space, trimmed."""
    return " ".join(text.split())


def has_words(text: str) -> bool:
    """Whether a sentence holds a letter or digit (a lone "—" or "* * *" is no sentence)."""
    return bool(_ALNUM.search(text))


@functools.lru_cache(maxsize=1)
def _segmenter():  # pysbd ships no type hints
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(paragraph: str, window: int = WINDOW) -> list[str]:
    """The normalised sentences of a paragraph, in order, each holding a letter or digit."""
    text = normalise(paragraph)
    pieces: list[str] = []
    while text:
        if len(text) <= window:
            pieces.extend(_segmenter().segment(text))
            break
        found = _segmenter().segment(text[:window])
        if len(found) > 1:
            keep = found[:-1]
            used = sum(len(s) for s in keep)
            if text[:used] != "".join(keep):  # pysbd changed the text: fall back to the last whitespace
                used = _cut(text, window)
                keep = [text[:used]]
        else:  # no sentence end inside a whole window: cut at its last space
            used = _cut(text, window)
            keep = [text[:used]]
        pieces.extend(keep)
        text = text[used:].lstrip()
    return [s for s in (normalise(p) for p in pieces) if has_words(s)]


def _cut(text: str, window: int) -> int:
    """Where to cut an over-long run: after its last space within the window, else at the window."""
    space = text.rfind(" ", 0, window)
    return space + 1 if space > 0 else window
