"""Rich renderings for the CLI: evaluation tables and progress bars."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from pipeline.evaluation import EvalReport

if TYPE_CHECKING:
    from pipeline.decoder_workflows import DecoderReport

MAP_LABELS = {
    "cube": "cube",
    "identity": "identity (q as answer)",
    "mean_shift": "mean shift",
    "ridge": "ridge (linear q→a)",
    "residual_ridge": "residual ridge (q + linear)",
    "mean_answer": "mean answer",
    "nearest_question": "nearest question (FAQ)",
}


class RateColumn(ProgressColumn):
    """Items per second over rich's recent-speed window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f}/s" if speed else "-/s", style="progress.data.speed")


def progress_bar(console: Console, transient: bool = False) -> Progress:
    """A progress display with count, rate, elapsed time and ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def eval_table(report: EvalReport, title: str) -> Group:
    """Three tables: mean cosine per map; retrieval and end-to-end, cube beside identity; paired differences."""
    cos = Table(title=f"{title} — mean cosine to the reference answer", title_justify="left")
    cos.add_column("map")
    cos.add_column("metric")
    cos.add_column("mean", justify="right")
    for name, label in MAP_LABELS.items():
        cos.add_row(label, f"{name}_cos", f"{report.cos[f'{name}_cos']:.4f}")

    bank = Table(
        title=f"phrase bank: open = {report.bank_sizes['open']} train + split answers, closed = {report.bank_sizes['closed']} train answers",
        title_justify="left",
    )
    bank.add_column("metric")
    maps = list(report.retrieval)
    for name in maps:
        bank.add_column(name, justify="right")
    for metric in ("R@1", "R@10", "MRR"):
        bank.add_row(f"open-bank {metric}", *(f"{report.retrieval[m][metric]:.4f}" for m in maps))
    for metric in ("e2e_cos", "decode_fidelity", "echo_rate"):
        for bank_name in ("closed", "open"):
            key = f"{metric}_{bank_name}"
            bank.add_row(f"{metric} ({bank_name} bank)", f"{report.e2e[key]:.4f}", f"{report.e2e['identity_' + key]:.4f}", *[""] * (len(maps) - 2))

    diffs = Table(title="paired per-sample differences, 95% bootstrap interval", title_justify="left")
    diffs.add_column("difference")
    diffs.add_column("mean", justify="right")
    diffs.add_column("95% interval", justify="right")
    diffs.add_column("excludes 0")
    for name, interval in report.differences.items():
        diffs.add_row(name, f"{interval.mean:+.4f}", f"[{interval.low:+.4f}, {interval.high:+.4f}]", "yes" if interval.excludes_zero else "no")
    return Group(cos, bank, diffs)


def decoder_tables(report: DecoderReport, split: str) -> Group:
    """Round trip per decoding mode beside the nearest-training-sentence reference; then the Q→A figures."""
    trip = Table(title=f"round trip on {report.round_trip[0].sentences} held-out sentences of {split}", title_justify="left")
    for column in ("decoder", "fidelity", "BLEU", "length ratio", "exact", "real words", "ms median", "ms p90"):
        trip.add_column(column, justify="left" if column == "decoder" else "right")
    for r in report.round_trip:
        trip.add_row(
            f"generative, {r.mode}", f"{r.fidelity:.4f}", f"{r.bleu:.2f}", f"{r.length_ratio:.3f}", f"{r.exact_match:.3f}", f"{r.real_words:.4f}",
            f"{r.ms_median:.0f}", f"{r.ms_p90:.0f}",
        )
    trip.add_row("nearest training sentence", f"{report.nearest_training_fidelity:.4f}", f"{report.nearest_training_bleu:.2f}", "", "", "", "", "")
    qa = Table(title=f"decoding the cube outputs of {split} ({report.split_size} Q→A pairs, closed bank)", title_justify="left")
    for column in ("decoder", "e2e_cos", "decode_fidelity", "BLEU vs answer", "echo rate", "generative share"):
        qa.add_column(column, justify="left" if column == "decoder" else "right")
    for q in report.qa:
        qa.add_row(q.decoder, f"{q.e2e_cos:.4f}", f"{q.decode_fidelity:.4f}", f"{q.bleu:.2f}", f"{q.echo_rate:.3f}", f"{q.generative_share:.3f}")
    t = report.threshold
    note = Text(f"hybrid threshold {t['threshold']:.4f} (bank score below it → generative), chosen on {t['chosen_on']}: "
                "best e2e_cos with an echo rate no higher than the bank's")
    return Group(trip, qa, note)
