"""How many bank sentences of a docs folder are fragments: the share under 25 characters and the shortest ones.

Reads the folder as `cubeqa bank build` does (read_documents + bank_sentences, duplicates dropped) with whatever
code PYTHONPATH imports, so the same command measures a checkout before and after a change:

    PYTHONPATH=. .venv/bin/python bench/doc_fragments.py tests/data/docs/starlette
    PYTHONPATH=/path/to/older/checkout .venv/bin/python bench/doc_fragments.py tests/data/docs/starlette
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.knowledge.documents import bank_sentences, read_documents

SHORT = 25  # characters: below this a "sentence" is mostly a heading, a bullet or a cut-off piece


def main() -> None:
    """Prints (and with --json writes) the figures for the given files and folders."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("paths", nargs="+", type=Path, help="files or folders, as given to `cubeqa bank build`")
    parser.add_argument("--shortest", type=int, default=10, help="how many of the shortest sentences to list")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    texts = [s.text for s in bank_sentences(read_documents(args.paths))]
    short = [t for t in texts if len(t) < SHORT]
    figures = {
        "sentences": len(texts), "under_25": len(short), "share_under_25": round(len(short) / max(1, len(texts)), 4),
        "shortest": sorted(texts, key=lambda t: (len(t), t))[: args.shortest],
    }
    print(f"{figures['sentences']} sentences, {figures['under_25']} under {SHORT} characters "
          f"({100 * figures['share_under_25']:.1f}%); the {args.shortest} shortest:")
    for text in figures["shortest"]:
        print(f"  {text!r}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
