"""The server-rendered charts (dferclip/ui/charts.py) and the Predict tab's timeline drawn with them, read back
with the standard library's HTML parser as a browser would parse them."""
from html.parser import HTMLParser

import numpy as np
import pytest
from app_helpers import feat_clip

from dferclip.predict import iter_predict, predict_clip
from dferclip.ui.charts import PLOT_SIZE, Line, column_chart_html, line_chart_html, nice_ticks
from dferclip.ui.predict import timeline_chart, timeline_rows

HOSTILE = '<img src=x onerror="alert(1)">&amp;"\'</svg><script>alert(2)</script>'


class Parsed(HTMLParser):
    """Every element (tag, attributes) in document order, and the text inside each legend key."""

    def __init__(self, text: str):
        super().__init__()
        self.elements, self.keys, self._key_depth, self._depth = [], [], None, 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        self._depth += 1
        if "dc-key" in (attrs.get("class") or "").split():
            self._key_depth = self._depth
            self.keys.append("")

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if self._key_depth == self._depth:
            self._key_depth = None
        self._depth -= 1

    def handle_data(self, data):
        if self._key_depth is not None:
            self.keys[-1] += data

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.elements if t == tag]


def polylines(text: str) -> dict[str, list[tuple[float, float]]]:
    """Each drawn line's points in plot units, by series name."""
    return {a["data-series"]: [tuple(map(float, p.split(","))) for p in a["points"].split()]
            for a in Parsed(text).all("polyline")}


def assert_no_markup_from_labels(text: str):
    tags = {t for t, _ in Parsed(text).elements}
    assert not tags & {"img", "script"}, tags
    assert not any(k.startswith("on") for _, a in Parsed(text).elements for k in a)


@pytest.fixture(scope="module")
def steps(tiny_model):
    """Every yield of the streaming prediction of a real 2.4 s clip (label first, then window by window)."""
    return list(iter_predict(tiny_model, str(feat_clip("single_face.mp4"))))


def test_labels_are_text_never_markup():
    lines = [Line(HOSTILE, [(0.0, 0.2), (1.0, 0.8)], emphasis=True), Line("calm", [(0.0, 0.5), (1.0, 0.5)])]
    chart = line_chart_html(f"title {HOSTILE}", lines, x_range=(0.0, 1.0), x_title=HOSTILE, message=HOSTILE)
    assert_no_markup_from_labels(chart)
    parsed = Parsed(chart)
    assert parsed.keys == [HOSTILE, "calm"]  # the legend shows the name as written
    assert [a["data-series"] for a in parsed.all("polyline")] == ["calm", HOSTILE]  # emphasised line on top
    columns = column_chart_html(HOSTILE, [HOSTILE, "2"], {HOSTILE: [1.0, 2.0]}, {}, group_titles=[HOSTILE, "b"])
    assert_no_markup_from_labels(columns)
    assert [a["data-group"] for a in Parsed(columns).all("rect")] == [HOSTILE, "2"]


def test_the_lines_points_are_the_timeline_probabilities_over_the_whole_clip(steps):
    pred = steps[-1]
    duration = pred.ingest.source.duration_s
    drawn = polylines(timeline_chart(pred))
    assert set(drawn) == set(pred.classes) and len(pred.timeline) >= 2
    centres = [(s + e) / 2 for s, e in zip(pred.timeline.start, pred.timeline.end)]
    for k, name in enumerate(pred.classes):
        times = [x / PLOT_SIZE * duration for x, _ in drawn[name]]
        probs = [1 - y / PLOT_SIZE for _, y in drawn[name]]
        np.testing.assert_allclose(times, centres, atol=duration / PLOT_SIZE)
        np.testing.assert_allclose(probs, pred.timeline.probabilities[:, k], atol=1e-3)
    widths = {a["data-series"]: float(a["stroke-width"]) for a in Parsed(timeline_chart(pred)).all("polyline")}
    assert widths[pred.top] > max(w for c, w in widths.items() if c != pred.top)  # the top class stands out


def test_every_partial_timeline_renders(steps):
    """The stream's steps: the empty timeline names every class and says it is being scored; each later step
    draws one more window per line."""
    first = timeline_chart(steps[0])
    assert Parsed(first).keys == steps[0].classes and not polylines(first)
    assert f"Scoring the timeline: 0 of {steps[0].windows_total} windows" in first
    for k, pred in enumerate(steps[1:], start=1):
        chart = timeline_chart(pred)
        assert {len(p) for p in polylines(chart).values()} == {2 if k == 1 else k}  # one window: a segment
        assert (f"window {k} of {pred.windows_total}" in chart) == (not pred.complete)
        assert len(timeline_rows(pred)["data"]) == k * len(pred.classes)


def test_a_single_window_is_a_visible_segment_over_its_span(tiny_model):
    pred = predict_clip(tiny_model, feat_clip("single_face.mp4"), frame_budget=8)  # room for one window
    assert len(pred.timeline) == 1
    (start,), (end,), duration = pred.timeline.start, pred.timeline.end, pred.ingest.source.duration_s
    for name, points in polylines(timeline_chart(pred)).items():
        k = pred.classes.index(name)
        assert [x for x, _ in points] == pytest.approx([start / duration * PLOT_SIZE, end / duration * PLOT_SIZE],
                                                       abs=0.01)
        assert end > start and points[0][1] == points[1][1]  # flat, as long as the window
        assert 1 - points[0][1] / PLOT_SIZE == pytest.approx(pred.timeline.probabilities[0, k], abs=1e-3)
    row = timeline_rows(pred)["data"][0]
    assert row[0] == pytest.approx((start + end) / 2, abs=1e-3) and row[3:] == [start, end]


def test_empty_states():
    empty = timeline_chart(None)
    assert not Parsed(empty).all("polyline") and "Predict a clip" in empty and Parsed(empty).all("svg")
    assert timeline_rows(None) == {"columns": ["time", "expression", "probability", "start", "end"], "data": []}
    dot = line_chart_html("t", [Line("a", [(0.5, 0.5)])], x_range=(0.0, 1.0))  # one point: a dot, not nothing
    assert polylines(dot)["a"] == [(500.0, 500.0), (500.0, 500.0)]
    assert column_chart_html("t", [], {}, {}) == ""


def test_columns_are_as_tall_as_their_values_on_a_round_axis():
    shares = {"relevancy": [10.0, 30.0, 0.0], "occlusion": [60.0, 25.0, 15.0]}
    rects = Parsed(column_chart_html("strip", ["1", "2", "3"], shares, {"relevancy": "#00f"}, unit=" %")).all("rect")
    assert len(rects) == 6 and rects[0]["fill"] == "#00f"
    top = 60.0  # the tallest column: the axis ends on its round tick
    for r in rects:
        value = float(r["data-value"])
        assert float(r["height"]) == pytest.approx(value / top * PLOT_SIZE, abs=0.01)
        assert float(r["y"]) + float(r["height"]) == pytest.approx(PLOT_SIZE, abs=0.01)  # from the baseline up
    assert nice_ticks(0, 2.4) == [0, 0.5, 1, 1.5, 2] and nice_ticks(0, 1, 5) == [0, 0.25, 0.5, 0.75, 1]
    assert nice_ticks(0, 23.4, 5) == [0, 10, 20]
