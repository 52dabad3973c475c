"""Runs the job system's fault scenarios and prints what happened to every accepted job.

    python bench/reliability.py [--jobs 500] [--scenario NAME ...] [--json PATH]

Each scenario submits a bulk of validation questions to a private Redis + PostgreSQL with one real
worker per stage and a reconciler (`cubeqa reconcile --every 2 --after 20`), injects its fault once a
fifth of the bulk is final, and counts the outcome from the SQL store (see bench/chaos.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from chaos import RECONCILE_AFTER, SCENARIOS, VISIBILITY_TIMEOUT, run_scenarios  # noqa: E402

console = Console(width=150)
COLUMNS = ("scenario", "submitted", "done", "failed_as_expected", "cancelled", "lost", "duplicated",
           "written_after_cancel", "redelivered", "counters_exact", "hit_running_task", "recover_s")


def table(rows: list[dict]) -> Table:
    out = Table(title=f"fault scenarios (reconciler re-sends after {RECONCILE_AFTER} s, Redis re-delivers after {VISIBILITY_TIMEOUT} s)", title_justify="left")
    for column in COLUMNS:
        out.add_column(column, justify="left" if column == "scenario" else "right")
    for row in rows:
        out.add_row(*("-" if row[c] is None else str(row[c]) for c in COLUMNS))
    return out


def main(
    jobs: Annotated[int, typer.Option(min=50, help="questions per scenario")] = 500,
    scenario: Annotated[list[str] | None, typer.Option(help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")] = None,
    deadline: Annotated[float, typer.Option(min=10, help="seconds a scenario may take before unfinished jobs count as lost")] = 240,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the rows as a JSON list")] = None,
) -> None:
    names = scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}", param_hint="--scenario")
    rows = run_scenarios(names, jobs, deadline, log=lambda line: console.log(line, markup=False, highlight=False))
    console.print(table(rows))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    bad = [r["scenario"] for r in rows
           if r["lost"] or r["duplicated"] or r["written_after_cancel"] or not r["counters_exact"]]
    if bad:
        console.print(f"[red]jobs lost or duplicated in: {', '.join(bad)}[/red]")
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
