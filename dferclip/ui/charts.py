"""Horizontal bar charts rendered on the server as plain HTML, for the Descriptions tab.

Why not ``gr.BarPlot``: with Gradio 6.31's native plot, after a model switch the drawn Vega view kept the
previous result (the scores table beside it was current) until the next update; a cell edit did not show it.
The plot pushes new rows into an already drawn view from a copy of its rows that a separate effect recomputes,
which is the likely cause (read from its front-end code, not proven). It also logs a Vega-Lite version warning
per drawing, a band-scale warning per bar chart, "Infinite extent" for empty data, and its rotated labels
collapse at phone width. These charts are one HTML string per result: what the server computed is what the page
shows, every bar carries its number as text, in ``data-value`` and in its ``aria-label``, and long class names
wrap instead of overlapping.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
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
"""
