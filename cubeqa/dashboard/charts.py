"""Plotly figure specs (plain dicts, drawn by plotly.js in the page) from the store's figures; every axis
carries a title with its unit."""

from __future__ import annotations

from typing import Any

from cubeqa.dashboard.compare import MetricDiff
from storage.figures import Histogram, StageTimes, Throughput

Chart = dict[str, Any]  # a plotly figure: {"data": [traces], "layout": {...}}
NO_ANSWER = "none"  # the decoder path of "no confident answer"
PATH_LABELS: dict[str | None, str] = {
    NO_ANSWER: "no confident answer", "bank": "phrase bank", "generative": "generative", None: "(none recorded)",
}
COLOURS = {"a": "#2563eb", "b": "#d97706", "grey": "#64748b", "green": "#059669", "red": "#dc2626"}
HISTOGRAM_COLOURS = [COLOURS["a"], COLOURS["green"], COLOURS["b"], COLOURS["grey"]]  # by place on the page
STAGE_COLOURS = ["#2563eb", "#93c5fd", "#d97706", "#fcd34d"]


def layout(x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    """The layout every chart shares, with its axis titles."""
    return {
        "xaxis": {"title": {"text": x_title}, "automargin": True, "zeroline": False},
        "yaxis": {"title": {"text": y_title}, "automargin": True, "rangemode": "tozero"},
        "margin": {"l": 60, "r": 20, "t": 10, "b": 50},
        "height": 260,
        "bargap": 0.05,
        "showlegend": False,
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#ffffff",
        "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 12},
        **extra,
    }


def histogram_chart(hist: Histogram, x_title: str, colour: str) -> Chart | None:
    """Bars of a histogram computed in SQL (bin centres and counts); None when no job has the value."""
    if not hist.n:
        return None
    edges = hist.edges
    centres = [(lo + hi) / 2 for lo, hi in zip(edges, edges[1:])]
    width = edges[1] - edges[0]
    trace = {"type": "bar", "x": centres, "y": hist.counts, "width": [width] * len(centres),
             "marker": {"color": colour}, "hovertemplate": "%{x:.3f}: %{y} jobs<extra></extra>"}
    shapes = [{"type": "line", "x0": hist.mean, "x1": hist.mean, "y0": 0, "y1": 1, "yref": "paper",
               "line": {"color": COLOURS["red"], "dash": "dot", "width": 2}}]
    return {"data": [trace], "layout": layout(x_title, "jobs (count)", shapes=shapes)}


def paths_chart(paths: dict[str | None, int]) -> Chart | None:
    """Done jobs per decoder path, "no confident answer" in red."""
    if not paths:
        return None
    names = list(paths)
    colours = [COLOURS["red"] if name == NO_ANSWER else COLOURS["a"] for name in names]
    trace = {"type": "bar", "x": [PATH_LABELS.get(n, n) for n in names], "y": [paths[n] for n in names],
             "marker": {"color": colours}, "hovertemplate": "%{x}: %{y} jobs<extra></extra>"}
    return {"data": [trace], "layout": layout("decoder path", "jobs (count)")}


def stage_chart(times: dict[str, StageTimes]) -> Chart | None:
    """Grouped bars per stage: compute time per job and queue wait before the stage, median and p90."""
    stages = [s for s, t in times.items() if t.compute_p50 is not None]
    if not stages:
        return None
    series = (("compute_p50", "compute, median"), ("compute_p90", "compute, p90"), ("wait_p50", "wait, median"),
              ("wait_p90", "wait, p90"))
    data = [
        {"type": "bar", "name": label, "x": stages, "y": [getattr(times[s], key) for s in stages],
         "marker": {"color": colour}, "hovertemplate": f"%{{x}} {label}: %{{y:.1f}} ms<extra></extra>"}
        for (key, label), colour in zip(series, STAGE_COLOURS)
    ]
    chart = layout("stage", "time per job (ms, log scale)", barmode="group", showlegend=True,
                   legend={"orientation": "h", "y": 1.15}, margin={"l": 60, "r": 20, "t": 30, "b": 50})
    # Queue waits run to seconds while compute is milliseconds: a log axis keeps both readable.
    chart["yaxis"]["type"] = "log"
    del chart["yaxis"]["rangemode"]
    return {"data": data, "layout": chart}


def throughput_chart(series: Throughput) -> Chart | None:
    """Final jobs per second in each time slice since submission, one bar per slice (jobs become final in
    micro-batches: bars show the slices, where a line would draw rates between them)."""
    if not series.seconds or series.width is None:
        return None
    trace = {"type": "bar", "x": series.seconds, "y": series.jobs_per_second,
             "width": [series.width] * len(series.seconds), "marker": {"color": COLOURS["green"]},
             "hovertemplate": "%{x:.1f} s: %{y:.1f} jobs/s<extra></extra>"}
    return {"data": [trace], "layout": layout("time since submission (s)", "throughput (jobs/s)")}


def diff_chart(
    diffs: list[MetricDiff], labels: dict[str, str],
    x_title: str = "difference of means, B − A (metric units; 95% bootstrap interval)", y_title: str = "metric",
) -> Chart | None:
    """One point per metric: mean difference B − A with its 95% bootstrap interval as an error bar."""
    if not diffs:
        return None
    trace = {
        "type": "scatter", "mode": "markers", "x": [d.diff for d in diffs], "y": [labels[d.name] for d in diffs],
        "marker": {"size": 9, "color": [COLOURS["green"] if d.significant else COLOURS["grey"] for d in diffs]},
        "error_x": {"type": "data", "symmetric": False, "array": [d.high - d.diff for d in diffs],
                    "arrayminus": [d.diff - d.low for d in diffs], "color": COLOURS["grey"], "thickness": 2},
        "hovertemplate": "%{y}: %{x:+.4f}<extra></extra>",
    }
    shapes = [{"type": "line", "x0": 0, "x1": 0, "y0": 0, "y1": 1, "yref": "paper",
               "line": {"color": "#0f172a", "width": 1}}]
    chart = layout(x_title, y_title, shapes=shapes,
                   height=60 + 40 * len(diffs))
    chart["yaxis"] = {"title": {"text": y_title, "standoff": 16}, "automargin": True, "autorange": "reversed"}
    chart["margin"]["l"] = 200  # room for the metric names and the axis title beside them
    return {"data": [trace], "layout": chart}
