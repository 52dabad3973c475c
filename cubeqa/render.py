"""Rich renderings for the CLI: evaluation tables and progress bars."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.evaluation import EvalReport

MAP_LABELS = {
    "cube": "cube",
    "identity": "identity (q as answer)",
    "mean_shift": "mean shift",
    "ridge": "ridge (linear q→a)",
    "mean_answer": "mean answer",
    "nearest_question": "nearest question (FAQ)",
}


def progress_bar(console: Console, transient: bool = False) -> Progress:
    """A progress display with count, rate-derived ETA and elapsed time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def eval_table(report: EvalReport, title: str) -> Table:
    """One table: mean cosine per map, open-bank retrieval, e2e, and paired differences with 95% CIs."""
    table = Table(title=title, show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI of paired difference", justify="right")
    for name, label in MAP_LABELS.items():
        table.add_row(f"{name}_cos — {label}", f"{report.cos[f'{name}_cos']:.4f}", "")
    for name, figures in report.retrieval.items():
        for metric, value in figures.items():
            table.add_row(f"open-bank {metric} — {name}", f"{value:.4f}", "")
    for name, value in report.e2e.items():
        table.add_row(name, f"{value:.4f}", "")
    for name, interval in report.differences.items():
        verdict = "" if interval.excludes_zero else " (includes 0)"
        table.add_row(name, f"{interval.mean:+.4f}", f"[{interval.low:+.4f}, {interval.high:+.4f}]{verdict}")
    table.caption = f"banks: closed {report.bank_sizes['closed']} train answers, open {report.bank_sizes['open']} (train + split)"
    return table
