"""No product function over 60 lines unless docs/STYLE.md lists it with a reason ("Functions over 60 lines")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("pipeline", "tasks", "storage", "cubeqa", "workers")
LIMIT = 60


def long_functions() -> dict[str, int]:
    """`path name` -> lines, for every product function longer than LIMIT."""
    found: dict[str, int] = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > LIMIT:
                        found[f"{path.relative_to(ROOT).as_posix()} {node.name}"] = lines
    return found


def listed_in_style() -> set[str]:
    """The functions STYLE.md's table lets run long, as `path name`."""
    section = (ROOT / "docs" / "STYLE.md").read_text(encoding="utf-8").split("## Functions over 60 lines")[1]
    section = section.split("\n## ")[0]
    return {f"{path} {name}" for path, name in re.findall(r"^\| `([^`]+)` `([^`]+)` \|", section, re.MULTILINE)}


def test_no_product_function_runs_over_60_lines_unless_style_lists_why() -> None:
    long, listed = long_functions(), listed_in_style()
    assert sorted(set(long) - listed) == [], "shorten these, or list them in docs/STYLE.md with a reason"
    assert sorted(listed - set(long)) == [], "these are no longer long: take them off STYLE.md's list"


def test_the_measure_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    node = ast.parse(f"def long():\n{body}\n").body[0]
    assert isinstance(node, ast.FunctionDef) and (node.end_lineno or 0) - node.lineno + 1 == LIMIT + 1
