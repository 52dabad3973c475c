"""`cubeqa.render.progress_bar`: a live bar on a terminal, plain progress lines with rate and ETA elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from cubeqa.render import progress_bar


class Clock:
    """A hand-moved clock for the progress display."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def captured(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=160, color_system=None), out


def test_a_log_gets_a_line_per_tenth_with_rate_and_eta_and_no_bar() -> None:
    console, out = captured(terminal=False)
    clock = Clock()
    with progress_bar(console, get_time=clock) as bar:
        task = bar.add_task("batch 7", total=40, completed=4)  # resumed: 4 jobs were done before the watch began
        for done in range(5, 41):
            clock.now += 2.0
            bar.update(task, completed=done)
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[1] for line in lines] == [f"{n}/40 ({n * 100 // 40}%)" for n in range(8, 41, 4)]
    assert lines[0] == "batch 7  8/40 (20%)  2.0 s/it  elapsed 0:00:08  ETA 0:01:04"
    assert lines[4] == "batch 7  24/40 (60%)  2.0 s/it  elapsed 0:00:40  ETA 0:00:32"
    assert lines[-1] == "batch 7  40/40 (100%)  2.0 s/it  elapsed 0:01:12  done"
    assert "━" not in out.getvalue()


def test_epochs_get_a_line_each_timed_from_the_start_of_the_first() -> None:
    console, out = captured(terminal=False)
    clock = Clock()
    with progress_bar(console, get_time=clock) as bar:
        task = bar.add_task("train", total=3, start=False)
        clock.now += 500  # embedding, before the first epoch: not part of the epochs' rate
        for epoch in (1, 2, 3):
            clock.now += 90  # 80 s of training and 10 s of validation an epoch
            bar.start_task(task, started_ago=80)
            bar.update(task, completed=epoch, description=f"train loss {1 / epoch:.4f}")
    assert out.getvalue().splitlines() == [
        "train loss 1.0000  1/3 (33%)  80.0 s/it  elapsed 0:01:20  ETA 0:02:40",
        "train loss 0.5000  2/3 (67%)  85.0 s/it  elapsed 0:02:50  ETA 0:01:25",
        "train loss 0.3333  3/3 (100%)  86.7 s/it  elapsed 0:04:20  done",
    ]


def test_a_task_without_a_total_logs_once_a_minute_while_it_moves() -> None:
    console, out = captured(terminal=False)
    clock = Clock()
    with progress_bar(console, get_time=clock) as bar:
        task = bar.add_task("decode", total=None)
        for _ in range(9):
            clock.now += 20
            bar.advance(task, 1)
        clock.now += 120
        bar.update(task, description="decode (stalled)")  # nothing moved since the last line: no line
    assert out.getvalue().splitlines() == [f"decode  {n}/?  20.0 s/it  elapsed 0:0{n // 3}:00  ETA -:--:--" for n in (3, 6, 9)]


def test_a_log_line_is_one_line_whatever_the_width_and_is_not_markup() -> None:
    console, out = captured(terminal=False)
    console.width = 20
    with progress_bar(console, get_time=Clock()) as bar:
        task = bar.add_task("embed [bold]questions.jsonl[/bold] (3 texts)", total=3)
        bar.update(task, completed=3)
    assert out.getvalue().count("\n") == 1 and out.getvalue().startswith("embed [bold]questions.jsonl[/bold] (3 texts)  3/3 (100%)")


def test_the_terminal_bar_shows_a_rate_and_eta_when_rich_has_no_recent_samples() -> None:
    console, out = captured(terminal=True)
    clock = Clock()
    bar = progress_bar(console, get_time=clock)
    task = bar.add_task("batch", total=100)
    clock.now += 40
    bar.update(task, completed=50)  # one sample, 40 s after the start: rich's 30 s window gives no speed
    row = bar.make_tasks_table(bar.tasks)
    rendered = io.StringIO()
    Console(file=rendered, width=160, color_system=None).print(row)
    assert "1.2/s" in rendered.getvalue() and "ETA 0:00:40" in rendered.getvalue() and "-/s" not in rendered.getvalue()
    clock.now += 40
    bar.update(task, completed=100)  # the whole batch in one poll, as `submit --wait` sees a fast one
    rendered = io.StringIO()
    Console(file=rendered, width=160, color_system=None).print(bar.make_tasks_table(bar.tasks))
    assert "1.2/s" in rendered.getvalue() and "ETA 0:00:00" in rendered.getvalue()
    assert out.getvalue() == ""  # never started: nothing drawn, and no log lines on a terminal


def test_a_bank_build_stage_reported_only_when_done_shows_no_rate() -> None:
    """`bank build`'s read and write stages report once, at their end: no rate (it read 19,248,334.7/s)."""
    from cubeqa.bank_cli import stage_progress

    console, out = captured(terminal=False)
    clock = Clock()
    with progress_bar(console, get_time=clock) as bar:
        report = stage_progress(bar)
        clock.now += 0.001
        report("read", 5000, 0)
        report("read", 5000, 5000)
        report("embed", 1000, 5000)  # 1,000 sentences were cached: counted, not as speed
        for done in range(2000, 5001, 1000):
            clock.now += 10
            report("embed", done, 5000)
    lines = out.getvalue().splitlines()
    assert lines[0] == "read  5000/5000 (100%)  -/s  elapsed 0:00:00  done"
    assert lines[-1] == "embed  5000/5000 (100%)  100.0/s  elapsed 0:00:40  done"
