"""Check the docs development set against the Markdown pages it was written from.

    python bench/check_devset.py --docs /path/to/starlette/docs [--data bench/data/docs_dev.jsonl]

For every answerable question, the answer must appear, after normalisation,
inside one block of the stripped text of its own page; an alternative answer
may come from any page of the folder (answers are compared by text).
A page is stripped the way the data set's README describes: Markdown parsed
with markdown-it-py (CommonMark), inline markup removed (backticks, emphasis,
link and image syntax, inline HTML tags; link text kept), fenced/indented code,
HTML blocks and tables dropped, admonition and tab markers (``!!! note``,
``??? info``, ``=== "Tab"``) dropped with their indented prose kept, and
whitespace collapsed. Headings are not searched; they give the section path
(``A > B > C``) of the blocks under them.

It also reports, without counting them as missing: answers that do not look
like a whole sentence of their block (text before them in the block not
ending a sentence, or no final punctuation), and section paths that differ from
the headings above the block. Prints figures only; the exit status is 1 when
any answer or alternative is missing or the file is malformed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

from markdown_it import MarkdownIt

_MARKER = re.compile(r"^(\s*)(?:(?:!!!|\?\?\?\+?)\s+\w[\w-]*(?:\s+\".*\")?|===\s+\".*\")\s*$")


def normalise(text: str) -> str:
    """NFKC, whitespace collapsed, ends trimmed: how answers are compared."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def _unwrap_containers(source: str) -> str:
    """Drop admonition/tab marker lines and dedent their indented bodies."""
    out: list[str] = []
    lines = source.splitlines()
    i = 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        m = None if in_fence else _MARKER.match(line)
        if not m:
            out.append(line)
            i += 1
            continue
        base = len(m.group(1))
        i += 1
        body_indent = base + 4
        while i < len(lines):
            body = lines[i]
            if body.strip() and len(body) - len(body.lstrip()) < body_indent:
                break
            out.append(body[body_indent:] if body.strip() else "")
            i += 1
        out.append("")
    return "\n".join(out) + "\n"


def _inline_text(token) -> str:
    parts: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return normalise("".join(parts))


def stripped_blocks(source: str) -> list[tuple[str, str]]:
    """(section path, stripped text) for each prose block of a Markdown page."""
    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(_unwrap_containers(source))
    blocks: list[tuple[str, str]] = []
    headings: list[tuple[int, str]] = []
    in_table = 0
    pending_heading: int | None = None
    for tok in tokens:
        if tok.type == "table_open":
            in_table += 1
        elif tok.type == "table_close":
            in_table -= 1
        elif tok.type == "heading_open":
            pending_heading = int(tok.tag[1])
        elif tok.type == "inline":
            text = _inline_text(tok)
            if pending_heading is not None:
                headings = [h for h in headings if h[0] < pending_heading]
                headings.append((pending_heading, text))
                pending_heading = None
            elif not in_table and text:
                blocks.append((" > ".join(h[1] for h in headings), text))
    return blocks


def _whole_sentence(block: str, answer: str) -> bool:
    start = block.find(answer)
    while start >= 0:
        before = block[:start].rstrip()
        after = block[start + len(answer) :]
        starts_ok = not before or before[-1] in ".!?:)" or before.endswith(('."', ".)"))
        ends_ok = answer[-1] in ".!?:" and (not after or after[0] == " ")
        if starts_ok and ends_ok:
            return True
        start = block.find(answer, start + 1)
    return False


def _resolve(docs: Path, doc: str) -> Path | None:
    """docs/requests.md is looked up as DIR/docs/requests.md, then DIR/requests.md."""
    for cand in (docs / doc, docs / Path(doc).name):
        if cand.is_file():
            return cand
    return None


def _all_pages(docs: Path, cache: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every .md page under DIR as (docs/NAME.md, blocks), parsed once."""
    out = []
    for path in sorted(docs.rglob("*.md")):
        key = f"docs/{path.name}"
        if key not in cache:
            cache[key] = stripped_blocks(path.read_text(encoding="utf-8"))
        if cache[key] is not None:
            out.append((key, cache[key]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--docs", required=True, type=Path, help="folder holding the Starlette .md pages (docs/FILE.md or FILE.md)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parent / "data" / "docs_dev.jsonl",
        help="the development set (JSON Lines)",
    )
    args = parser.parse_args(argv)

    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    problems: list[str] = []
    ids = Counter(r.get("id") for r in rows)
    problems += [f"duplicate id {i}" for i, n in ids.items() if n > 1]

    cache: dict[str, list[tuple[str, str]] | None] = {}
    found = missing = alt_found = alt_missing = 0
    missing_ids: list[str] = []
    not_sentence: list[str] = []
    section_diff: list[str] = []
    also_elsewhere: list[str] = []
    alt_other_page: list[str] = []
    pages: Counter = Counter()
    answerable = unanswerable = 0

    for r in rows:
        rid = r.get("id", "?")
        if not str(r.get("question", "")).strip():
            problems.append(f"{rid}: empty question")
        if r.get("answer") is None:
            unanswerable += 1
            if r.get("doc") is not None or r.get("alt_answers"):
                problems.append(f"{rid}: unanswerable but has doc or alt_answers")
            continue
        answerable += 1
        doc = r.get("doc")
        if not doc:
            problems.append(f"{rid}: answerable without doc")
            continue
        pages[doc] += 1
        if doc not in cache:
            path = _resolve(args.docs, doc)
            cache[doc] = stripped_blocks(path.read_text(encoding="utf-8")) if path else None
        blocks = cache[doc]
        if blocks is None:
            problems.append(f"{rid}: page {doc} not found under {args.docs}")
            missing += 1
            missing_ids.append(rid)
            continue
        for k, text in enumerate([r["answer"], *r.get("alt_answers", [])]):
            target = normalise(text)
            hits = [(sec, b) for sec, b in blocks if target in b]
            elsewhere = (
                []
                if hits
                else [(d, b) for d, bl in _all_pages(args.docs, cache) if d != doc for _, b in bl if target in b]
            )
            label = rid if k == 0 else f"{rid} (alt {k})"
            if k == 0:
                # the answer itself must be on the question's own page
                if hits:
                    found += 1
                else:
                    missing += 1
                    missing_ids.append(label)
                    continue
                others = sorted({d for d, bl in _all_pages(args.docs, cache) if d != doc for _, b in bl if target in b})
                if others:
                    also_elsewhere.append(f"{rid} (also in {', '.join(others)})")
            else:
                # an alternative may come from another page: answers are compared by text
                if hits or elsewhere:
                    alt_found += 1
                    if elsewhere:
                        alt_other_page.append(f"{label} ({elsewhere[0][0]})")
                else:
                    alt_missing += 1
                    missing_ids.append(label)
                    continue
            if not any(_whole_sentence(b, target) for _, b in (hits or elsewhere)):
                not_sentence.append(label)
            if k == 0 and r.get("section") is not None and all(sec != r["section"] for sec, _ in hits):
                section_diff.append(f"{rid}: given {r['section']!r}, headings say {hits[0][0]!r}")

    print(f"questions: {len(rows)} ({answerable} answerable, {unanswerable} unanswerable)")
    print(f"pages covered by answerable questions: {len(pages)}")
    for doc, n in sorted(pages.items()):
        print(f"  {doc}: {n}")
    print(f"answers found: {found}, missing: {missing}")
    print(f"alt answers found: {alt_found}, missing: {alt_missing}")
    print(f"missing ids: {', '.join(missing_ids) if missing_ids else '-'}")
    print(f"alt answers found on another page: {', '.join(alt_other_page) if alt_other_page else '-'}")
    print(f"answers whose text also occurs on another page: {', '.join(also_elsewhere) if also_elsewhere else '-'}")
    print(f"not a whole sentence of its block (warning): {', '.join(not_sentence) if not_sentence else '-'}")
    print(f"section differs from headings (warning): {len(section_diff)}")
    for line in section_diff:
        print(f"  {line}")
    if problems:
        print(f"format problems: {len(problems)}")
        for p in problems:
            print(f"  {p}")
    return 1 if (missing or alt_missing or problems) else 0


if __name__ == "__main__":
    sys.exit(main())
