"""Rich renderings for the CLI: evaluation tables and progress bars."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from pipeline import EvalReport

if TYPE_CHECKING:
    from pipeline.decoder_workflows import DecoderReport

MAP_LABELS = {
    "cube": "model (tower → cube, or cube alone)",
    "tower": "question tower alone",
    "cube_only": "cube without the tower",
    "identity": "identity (q as answer)",
    "mean_shift": "mean shift",
    "ridge": "ridge (linear q→a)",
    "residual_ridge": "residual ridge (q + linear)",
    "mean_answer": "mean answer",
    "nearest_question": "nearest question (FAQ)",
}


HEARTBEAT_SECONDS = 60.0  # a log line at least this often while a task moves, however slowly
STARTED_AT = "started_at"  # task field: `completed` when the clock started, so a resumed count is not read as speed


def task_rate(task: Task) -> float | None:
    """Items per second: the recent rate while the task runs (its average when rich's 30 s window holds
    fewer than two samples, as with slow epochs or one jump), the average over the run once it is finished."""
    elapsed = task.finished_time if task.finished and task.finished_time is not None else task.elapsed
    done = task.completed - task.fields.get(STARTED_AT, 0)
    average = done / elapsed if elapsed and done > 0 else None
    return average if task.finished else task.speed or average


def task_eta(task: Task) -> float | None:
    """Seconds left at the current rate; 0 once finished, None while unknown."""
    if task.finished:
        return 0.0
    rate = task_rate(task)
    return None if task.remaining is None or not rate else task.remaining / rate


def format_rate(rate: float | None) -> str:
    """`12.3/s`, or seconds per item below one a second (epochs), or `-/s` while unknown."""
    if not rate:
        return "-/s"
    return f"{rate:,.1f}/s" if rate >= 1 else f"{1 / rate:,.1f} s/it"


def format_seconds(seconds: float | None) -> str:
    """H:MM:SS, or -:--:-- while unknown."""
    return "-:--:--" if seconds is None else str(timedelta(seconds=math.ceil(seconds)))


class RateColumn(ProgressColumn):
    """Items per second (see `task_rate`)."""

    def render(self, task: Task) -> Text:
        return Text(format_rate(task_rate(task)), style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """Time left at the rate `RateColumn` shows."""

    def render(self, task: Task) -> Text:
        return Text(f"ETA {format_seconds(task_eta(task))}", style="progress.remaining")


@dataclass
class LogState:
    """What the last log line of a task showed."""

    total: float | None
    mark: int
    completed: float
    time: float


class ProgressBar(Progress):
    """A live rich bar on a terminal; elsewhere (a pipe, a log file, CI) the live display is off and a plain
    line per tenth of each task is printed instead (per step for ten steps or fewer, at least once a minute
    while it moves, and when it finishes), each with its count, rate, elapsed time and ETA."""

    def __init__(self, *columns: ProgressColumn, console: Console, log_lines: bool, **options: Any) -> None:
        super().__init__(*columns, console=console, disable=log_lines, **options)
        self.log_lines = log_lines
        self.logged: dict[TaskID, LogState] = {}

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        task_id = super().add_task(description, start=start, total=total, completed=completed, visible=visible, **fields)
        self.logged[task_id] = LogState(total, self.mark(total, completed), completed, self.get_time())
        return task_id

    def start_task(self, task_id: TaskID, started_ago: float = 0.0) -> None:
        """Starts the task's clock, `started_ago` seconds back when its work began before its first report."""
        with self._lock:
            task = self._tasks[task_id]
            if task.start_time is None:
                task.start_time = self.get_time() - started_ago
                task.fields.setdefault(STARTED_AT, task.completed)  # unless the caller named it

    def update(self, task_id: TaskID, **changes: Any) -> None:
        super().update(task_id, **changes)
        self.log_if_due(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self.log_if_due(task_id)

    @staticmethod
    def mark(total: float | None, completed: float) -> int:
        """Which step (ten or fewer) or tenth of the task `completed` reaches."""
        if not total or total <= 0:
            return 0
        return int(completed) if total <= 10 else int(10 * completed // total)

    def log_if_due(self, task_id: TaskID) -> None:
        """Prints the task's line when it reached a new step or tenth, finished, or moved after a minute's silence."""
        if not self.log_lines:
            return
        with self._lock:
            task = self._tasks[task_id]
            state = self.logged[task_id]
            now = self.get_time()
            mark = self.mark(task.total, task.completed)
            if task.total != state.total:  # the total became known or changed: marks count from here
                state.total, state.mark = task.total, mark
            moved = task.completed > state.completed
            finished = task.finished and moved
            due = mark > state.mark or (moved and now - state.time >= HEARTBEAT_SECONDS)
            if not (finished or due):
                return
            state.mark, state.completed, state.time = mark, task.completed, now
            line = self.line(task)
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    @staticmethod
    def line(task: Task) -> str:
        """`description  done/total (pct%)  rate  elapsed H:MM:SS  ETA H:MM:SS` (`done` in place of the ETA at the end)."""
        count = f"{int(task.completed)}/{int(task.total)} ({task.percentage:.0f}%)" if task.total else f"{int(task.completed)}/?"
        elapsed = task.finished_time if task.finished and task.finished_time is not None else task.elapsed
        end = "done" if task.finished else f"ETA {format_seconds(task_eta(task))}"
        return f"{task.description}  {count}  {format_rate(task_rate(task))}  elapsed {format_seconds(elapsed)}  {end}"


def progress_bar(console: Console, transient: bool = False, get_time: Callable[[], float] | None = None) -> ProgressBar:
    """Progress with count, rate, elapsed time and ETA: a live bar on a terminal, log lines elsewhere."""
    return ProgressBar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        EtaColumn(),
        console=console,
        log_lines=not console.is_terminal or console.is_dumb_terminal,
        transient=transient,
        get_time=get_time,
    )


def eval_table(report: EvalReport, title: str) -> Group:
    """Three tables: mean cosine per map; retrieval and end-to-end, cube beside identity; paired differences."""
    cos = Table(title=f"{title} — mean cosine to the reference answer", title_justify="left")
    cos.add_column("map")
    cos.add_column("metric")
    cos.add_column("mean", justify="right")
    for name, label in MAP_LABELS.items():
        if f"{name}_cos" in report.cos:  # the tower rows exist only for a bundle with a tower
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


def bank_eval_table(report: dict[str, Any], title: str) -> Table:
    """The model ranked dense, lexical, fused (and reranked), and identity, on a knowledge bank, with the paired
    differences and, in the caption, precision and coverage of the ranking served at its confidence threshold."""
    table = Table(title=title, title_justify="left")
    table.add_column("ranking")
    metrics = ("P@1", "MRR@10", "R@20")
    for metric in metrics:
        table.add_column(metric, justify="right")
    labels = {"identity": "identity (teacher, dense)", "dense": "model, dense", "lexical": "BM25",
              "fused": "model, fused", "reranked": "model, fused, reranked"}
    for name, label in labels.items():
        if name in report:
            table.add_row(label, *(f"{report[name][m]:.4f}" for m in metrics))
    differences = report["differences"]
    for pair in dict.fromkeys(name.split(":")[0] for name in differences):
        cells = (differences[f"{pair}: {m}"] for m in metrics)
        table.add_row(f"{pair} [95%]", *(f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" for d in cells))
    served = report.get("served", "fused")
    row = report[served]
    if "precision" in row:
        table.caption = (f"{served} (served), at confidence ≥ {row['min_confidence']:.2f}: precision {row['precision']:.4f}, "
                         f"coverage {row['coverage']:.4f}")
        none = report.get("unanswerable")
        if none and "refused" in none:
            table.caption += (f"; {none['questions']} questions the bank does not answer: {none['refused']:.1%} refused, "
                              f"precision over all answered {none['precision_all_answered']:.4f}")
    return table


def confidence_text(value: float) -> str:
    """A confidence to two decimals, never shown as the certainty 1.00 a calibrated estimate cannot have."""
    return "> 0.99" if value > 0.995 else f"{value:.2f}"
