"""Charts rendered on the server as plain HTML and inline SVG: the Descriptions tab's horizontal bars, the
Predict tab's timeline (lines over time) and the explanation's frame-importance strip (grouped columns).

Why not Gradio's native plots (``gr.BarPlot``, ``gr.LinePlot``): in Gradio 6.31, after a model switch the
drawn Vega view kept the previous result (the scores table beside it was current) until the next update; a cell
edit did not show it. The plot pushes new rows into an already drawn view from a copy of its rows that a
separate effect recomputes, which is the likely cause (read from its front-end code, not proven). They also log a
Vega-Lite version warning per drawing, a band-scale warning per bar chart and "Infinite extent" for empty data;
rotated labels collapse at phone width, and a line plot's legend made the page scroll sideways. These charts are
one HTML string per result: what the server computed is what the page shows, every bar carries its number as
text, in ``data-value`` and in its ``aria-label``, and long class names wrap instead of overlapping.

Every chart is self-contained: no script, no external asset, every label escaped (class names come from
user-edited description sets). Plots (:func:`line_chart_html`, :func:`column_chart_html`) draw their marks in
an SVG stretched over the plot area (``viewBox`` 0..PLOT_SIZE on both axes, ``preserveAspectRatio="none"``,
strokes that do not scale), while tick labels, titles and legends are HTML: text keeps its size at any width,
and legends wrap.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence


@dataclass(frozen=True)
class Bar:
    group: str  # the row label, e.g. a class name
    series: str  # e.g. "current" / "baseline", "positive" / "negative"
    value: float


def _number(value: float, unit: str) -> str:
    return f"{value:.1f}{unit}" if unit else f"{value:.3f}"


def bar_chart_html(title: str, bars: Sequence[Bar], colors: dict[str, str], *, unit: str = "",
                   limits: Optional[tuple[float, float]] = None, elem_class: str = "") -> str:
    """Rows of horizontal bars, one row per group, one bar per series, with a legend. ``limits``: the axis
    (default: from 0, or the smallest value if negative, to the largest). "" for no bars."""
    if not bars:
        return ""
    lo, hi = limits if limits is not None else (min(0.0, *(b.value for b in bars)), max(0.0, *(b.value for b in bars)))
    span = (hi - lo) or 1.0
    zero = (min(max(0.0, lo), hi) - lo) / span * 100
    groups: dict[str, list[Bar]] = {}
    for b in bars:
        groups.setdefault(b.group, []).append(b)
    rows = []
    for group, members in groups.items():
        lines = []
        for b in members:
            v = min(max(b.value, lo), hi)
            pos = (v - lo) / span * 100
            left, width = min(zero, pos), abs(pos - zero)
            label = f"{group}, {b.series}: {_number(b.value, unit)}"
            lines.append(
                f'<div class="dc-line" role="img" aria-label="{html.escape(label)}" data-group="{html.escape(group)}" '
                f'data-series="{html.escape(b.series)}" data-value="{b.value:.6g}">'
                f'<span class="dc-track"><span class="dc-bar" style="left:{left:.2f}%;width:{width:.2f}%;'
                f'background:{colors.get(b.series, "#6366f1")}"></span></span>'
                f'<span class="dc-num">{_number(b.value, unit)}</span></div>')
        rows.append(f'<div class="dc-row"><div class="dc-group">{html.escape(group)}</div>'
                    f'<div class="dc-lines">{"".join(lines)}</div></div>')
    legend = "".join(f'<span class="dc-key"><span class="dc-swatch" style="background:{c}"></span>'
                     f'{html.escape(s)}</span>' for s, c in colors.items() if any(b.series == s for b in bars))
    return (f'<div class="dc-chart {elem_class}"><div class="dc-title">{html.escape(title)}</div>'
            f'{"".join(rows)}<div class="dc-legend">{legend}</div></div>')


# --- plots over an x axis: lines (the timeline) and grouped columns (the frame-importance strip) ---------
PLOT_SIZE = 1000  # the SVG plot area's user units, on both axes
# distinct hues, readable on white and on Gradio's dark background; after these, lines repeat them dashed
PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#dc2626", "#9333ea", "#a16207", "#db2777", "#0891b2", "#65a30d",
           "#475569", "#1e3a8a", "#ca8a04")


@dataclass(frozen=True)
class Line:
    name: str
    points: Sequence[tuple[float, float]] = field(default_factory=tuple)  # (x, y), in data units
    emphasis: bool = False  # drawn thicker, on top, and named in bold in the legend


def line_style(index: int) -> tuple[str, bool]:
    """(colour, dashed) of the ``index``-th line: the palette, then the palette again dashed."""
    return PALETTE[index % len(PALETTE)], index >= len(PALETTE)


def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round tick values from ``lo`` to ``hi`` (both included when round), at most ``most`` of them."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(most - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 10) for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def _tick_label(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _scale(value: float, lo: float, hi: float) -> float:
    return (value - lo) / ((hi - lo) or 1.0) * PLOT_SIZE


def _plot(title: str, marks: str, label: str, *, x_ticks: Sequence[tuple[float, str, bool]],
          y_ticks: Sequence[tuple[float, str]], x_title: str, legend: str, height: int, message: str,
          elem_class: str) -> str:
    """The frame every plot shares: title, y tick labels, the SVG plot area (grid lines + ``marks``), x tick
    labels and title, an optional message over the plot area, a legend. Ticks: (position in 0..PLOT_SIZE,
    label), and for x ticks whether the label is minor (hidden when the chart is narrow)."""
    s = PLOT_SIZE
    grid = "".join(f'<line x1="0" x2="{s}" y1="{s - y:.2f}" y2="{s - y:.2f}" stroke="currentColor" '
                   f'stroke-opacity="0.15" vector-effect="non-scaling-stroke"/>' for y, _ in y_ticks)
    axis = (f'<line x1="0" x2="{s}" y1="{s}" y2="{s}" stroke="currentColor" stroke-opacity="0.5" '
            f'vector-effect="non-scaling-stroke"/>')
    y_labels = "".join(f'<span style="bottom:{100 * y / s:.2f}%">{_esc(t)}</span>' for y, t in y_ticks)
    x_labels = "".join(f'<span{" class=dc-minor" if minor else ""} style="left:{100 * x / s:.2f}%">{_esc(t)}</span>'
                       for x, t, minor in x_ticks)
    note = f'<div class="dc-message">{_esc(message)}</div>' if message else ""
    return (f'<div class="dc-chart dc-plot-chart {_esc(elem_class)}">'
            f'<div class="dc-title">{_esc(title)}</div>'
            f'<div class="dc-plot" style="grid-template-rows:{height}px 1.5em">'
            f'<div class="dc-yaxis">{y_labels}</div>'
            f'<svg class="dc-area" viewBox="0 0 {s} {s}" preserveAspectRatio="none" role="img" '
            f'aria-label="{_esc(label)}" xmlns="http://www.w3.org/2000/svg"><title>{_esc(label)}</title>'
            f'{grid}{axis}{marks}</svg>{note}'
            f'<div class="dc-xaxis">{x_labels}</div></div>'
            f'<div class="dc-axis-title">{_esc(x_title)}</div>'
            f'<div class="dc-legend">{legend}</div></div>')


def line_chart_html(title: str, lines: Sequence[Line], *, x_range: tuple[float, float],
                    y_range: tuple[float, float] = (0.0, 1.0), x_title: str = "", y_unit: str = "",
                    message: str = "", height: int = 200, elem_class: str = "") -> str:
    """One polyline per :class:`Line` over fixed axes (a line of one point is a dot); every line is in the
    legend, pointless ones too, so the colours stay put while lines grow. ``message``: shown over the plot
    area (e.g. why it is empty)."""
    (x0, x1), (y0, y1) = x_range, y_range
    s = PLOT_SIZE
    marks, keys = [], []
    for i, line in enumerate(lines):
        colour, dashed = line_style(i)
        width = 3.2 if line.emphasis else 1.8
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        pts = " ".join(f"{_scale(x, x0, x1):.2f},{s - _scale(y, y0, y1):.2f}" for x, y in line.points)
        if pts:
            # a single point still shows: round caps on a zero-length line draw a dot
            pts = pts if len(line.points) > 1 else f"{pts} {pts}"
            mark = (f'<polyline class="dc-series" data-series="{_esc(line.name)}" points="{pts}" fill="none" '
                    f'stroke="{colour}" stroke-width="{width}" stroke-linejoin="round" stroke-linecap="round"'
                    f'{dash} vector-effect="non-scaling-stroke"><title>{_esc(line.name)}</title></polyline>')
            marks.append((line.emphasis, mark))
        swatch = f'border-top:{3 if line.emphasis else 2}px {"dashed" if dashed else "solid"} {colour}'
        name = f"<strong>{_esc(line.name)}</strong>" if line.emphasis else _esc(line.name)
        keys.append(f'<span class="dc-key" data-series="{_esc(line.name)}"><span class="dc-line-swatch" '
                    f'style="{swatch}"></span>{name}</span>')
    marks.sort(key=lambda m: m[0])  # the emphasised line on top
    x_ticks = [(_scale(v, x0, x1), _tick_label(v), False) for v in nice_ticks(x0, x1)]
    y_ticks = [(_scale(v, y0, y1), _tick_label(v) + y_unit) for v in nice_ticks(y0, y1, 5)]
    drawn = sum(1 for ln in lines if ln.points)
    label = (f"{title}: {drawn} of {len(lines)} lines drawn, {x_title or 'x'} from {_tick_label(x0)} "
             f"to {_tick_label(x1)}")
    return _plot(title, "".join(m for _, m in marks), label, x_ticks=x_ticks, y_ticks=y_ticks, x_title=x_title,
                 legend="".join(keys), height=height, message=message, elem_class=elem_class)


def column_chart_html(title: str, groups: Sequence[str], series: dict[str, Sequence[float]], colors: dict[str, str],
                      *, group_titles: Optional[Sequence[str]] = None, x_title: str = "", unit: str = "",
                      height: int = 160, elem_class: str = "") -> str:
    """Grouped vertical columns from 0: one group per entry of ``groups`` (its short axis label), one column
    per series in each (values >= 0, e.g. shares in %). Every column carries its value in ``data-value`` and
    in its tooltip (with ``group_titles``, the group's long name). "" without groups."""
    if not groups:
        return ""
    s = PLOT_SIZE
    top = max([0.0, *(v for values in series.values() for v in values)])
    ticks = nice_ticks(0.0, top, 5) if top > 0 else [0.0, 1.0]
    if ticks[-1] < top:  # the axis ends on a round tick above the tallest column
        ticks.append(round(2 * ticks[-1] - ticks[-2], 10))
    hi = ticks[-1]
    slot = s / len(groups)
    width = slot * 0.8 / max(len(series), 1)
    titles = group_titles or groups
    fill = {n: colors.get(n) or line_style(k)[0] for k, n in enumerate(series)}
    marks = []
    for g, (short, long) in enumerate(zip(groups, titles)):
        for k, (name, values) in enumerate(series.items()):
            v = max(float(values[g]), 0.0)
            h = _scale(v, 0.0, hi)
            tip = f"{long}, {name}: {v:.1f}{unit}"
            marks.append(f'<rect class="dc-column" data-group="{_esc(short)}" data-series="{_esc(name)}" '
                         f'data-value="{float(values[g]):.6g}" x="{g * slot + slot * 0.1 + k * width:.2f}" '
                         f'y="{s - h:.2f}" width="{width:.2f}" height="{h:.2f}" fill="{fill[name]}">'
                         f'<title>{_esc(tip)}</title></rect>')
    # every label while there is room; every other one (the rest: class dc-minor) in a narrow chart
    x_ticks = [((g + 0.5) * slot, short, len(groups) > 8 and g % 2 == 1) for g, short in enumerate(groups)]
    y_ticks = [(_scale(v, 0.0, hi), _tick_label(v) + unit) for v in ticks]
    legend = "".join(f'<span class="dc-key"><span class="dc-swatch" style="background:{fill[n]}"></span>'
                     f'{_esc(n)}</span>' for n in series)
    label = f"{title}: {len(groups)} groups of {len(series)} columns"
    return _plot(title, "".join(marks), label, x_ticks=x_ticks, y_ticks=y_ticks, x_title=x_title, legend=legend,
                 height=height, message="", elem_class=elem_class)


CHART_CSS = """
.dc-chart {font-size: 0.85em; padding: 0.3em 0.2em;}
.dc-title {font-weight: 600; text-align: center; margin-bottom: 0.4em;}
.dc-row {display: flex; gap: 0.5em; align-items: center; padding: 2px 0; border-top: 1px solid var(--border-color-primary);}
.dc-group {flex: 0 0 7.5em; overflow-wrap: anywhere; line-height: 1.2;}
.dc-lines {flex: 1 1 auto; min-width: 0;}
.dc-line {display: flex; align-items: center; gap: 0.4em; height: 1.15em;}
.dc-track {position: relative; flex: 1 1 auto; height: 0.8em; background: var(--background-fill-secondary);}
.dc-bar {position: absolute; top: 0; bottom: 0;}
.dc-num {flex: 0 0 4.2em; text-align: right; font-variant-numeric: tabular-nums;}
.dc-legend {display: flex; gap: 1em; justify-content: center; margin-top: 0.4em; flex-wrap: wrap;}
.dc-swatch {display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: -0.1em;}
/* plots: an SVG area in a grid with HTML tick labels (no fixed width: nothing scrolls sideways) */
.dc-plot {display: grid; grid-template-columns: 2.6em minmax(0, 1fr); column-gap: 0.4em; padding-right: 1.2em;}
.dc-yaxis {grid-column: 1; grid-row: 1; position: relative;}
.dc-yaxis span {position: absolute; right: 0; transform: translateY(50%); line-height: 1;}
.dc-area {grid-column: 2; grid-row: 1; width: 100%; height: 100%; display: block; overflow: visible;}
.dc-message {grid-column: 2; grid-row: 1; align-self: center; justify-self: center; text-align: center;
  padding: 0.3em 0.6em; opacity: 0.75;}
.dc-xaxis {grid-column: 2; grid-row: 2; position: relative;}
.dc-xaxis span {position: absolute; top: 0.25em; transform: translateX(-50%); white-space: nowrap; line-height: 1;}
.dc-yaxis span, .dc-xaxis span {font-variant-numeric: tabular-nums; opacity: 0.8;}
.dc-axis-title {text-align: center; opacity: 0.8;}
.dc-line-swatch {display: inline-block; width: 1.4em; margin-right: 0.3em; vertical-align: 0.25em;}
.dc-plot-chart {container-type: inline-size;}
.dc-plot-chart .dc-legend {gap: 0.3em 1em;}
@container (max-width: 560px) {.dc-xaxis .dc-minor {display: none;}}
"""
