"""The Descriptions tab as a newcomer meets it (issue 16), in Debian chromium: the charts show the current
result, edits survive a model switch and a class-set change, evaluation labels are matched by class name, a
model that cannot load here says so, and the page works 400 px wide. Numbers are read from the page."""
import re
import shutil
import tempfile
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from app_helpers import TINY, feat_clip, free_port

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")]

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
OTHER = "tiny B"  # a second tiny DFER-CLIP model (other random weights, saved as a checkpoint)
EDIT = "a wide grin showing the upper teeth"
# another test's edit: the app's text-embedding cache outlives a test, and the suite runs in random order, so a test
# that counts the encodings an edit costs must be the only one to send its text
SET_ASIDE_EDIT = "lips pressed into a thin smile"


@pytest.fixture(scope="module")
def app_url():
    """The model bar and the Descriptions tab with two tiny models and zero-shot CLIP (offline here), and a
    random 16-frame clip as the page's current clip."""
    with served_workbench() as url:
        yield url


@contextmanager
def served_workbench(registry_class=None):
    """:func:`app_url`'s app, its registry made by ``registry_class`` (a ModelRegistry subclass) if given."""
    import gradio as gr
    import torch

    from dferclip.runtime import ZERO_SHOT_SOURCE, ModelEntry, ModelRegistry
    from dferclip.ui.context import AppContext, ClipRecord, build_model_bar
    from dferclip.ui.descriptions_tab import build_workbench_tab
    from dferclip.weights.checkpoints import load_model, save_model

    torch.manual_seed(7)
    other = save_model(load_model(TINY), tempfile.mkdtemp())
    entries = [ModelEntry(TINY, "tiny A", "explicit"), ModelEntry(str(other), OTHER, "checkpoints"),
               ModelEntry(ZERO_SHOT_SOURCE, "zero-shot CLIP ViT-B/32 (OpenAI weights, download)", "zero-shot")]
    ctx = AppContext((registry_class or ModelRegistry)(entries, dev="cpu"))
    torch.manual_seed(0)
    clip = ClipRecord(path="clip.webm", model_key=TINY, ingest=SimpleNamespace(video=torch.rand(1, 16, 3, 64, 64)),
                      prediction=None)
    with gr.Blocks() as demo:
        build_model_bar(ctx)
        ctx.clip = gr.State(clip)
        build_workbench_tab(ctx)
    port = free_port()
    from app import CSS  # the page as the app styles it

    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=CSS)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1400})
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.goto(app_url)
        yield page
        browser.close()


def chart(page, elem_id: str) -> dict[str, float]:
    """The current version's bars of a chart as the page shows them: {class: %}."""
    lines = page.locator(f"#{elem_id} [data-series=current]")
    return {lines.nth(i).get_attribute("data-group"): float(lines.nth(i).get_attribute("data-value"))
            for i in range(lines.count())}


def table_column(page, elem_id: str, column: str) -> dict[str, str]:
    """{first cell: cell of ``column``} of a Dataframe as the page shows it."""
    return page.evaluate("""([id, column]) => {
        const root = document.getElementById(id);
        const heads = [...root.querySelectorAll('thead th')].map(th => th.innerText.trim());
        const j = heads.indexOf(column), out = {};
        for (let r = 0; ; r++) {
            const first = root.querySelector(`[data-testid=cell-${r}-0]`);
            if (!first) return out;
            out[first.innerText.trim()] = root.querySelector(`[data-testid=cell-${r}-${j}]`).innerText.trim();
        }}""", [elem_id, column])


def rescore_and_wait(page, expect, text="same as baseline"):
    page.get_by_role("button", name="Re-score").click()
    expect(page.locator("#workbench-status")).to_contain_text(text, timeout=60_000)


def edit_cell(page, row: int, text: str):
    cell = page.locator("#descriptions-table").get_by_test_id(f"cell-{row}-1")
    cell.dblclick()
    editor = cell.locator("textarea, input").first
    editor.fill(text)
    editor.press("Enter")


def pick_model(page, label: str):
    page.get_by_label("Model", exact=True).click()
    page.get_by_role("option", name=label).click()


def assert_charts_match_scores(page):
    for elem_id, column in (("bars-zero-shot", "zero-shot %"), ("bars-learned", "learned %")):
        shown = chart(page, elem_id)
        table = table_column(page, "workbench-scores", column)
        assert shown and set(shown) == set(table), (shown, table)
        assert {c: f"{v:.1f}" for c, v in shown.items()} == table, (elem_id, shown, table)


def test_charts_follow_a_model_switch_and_the_edits_stay(page):
    from playwright.sync_api import expect

    rescore_and_wait(page, expect)
    assert_charts_match_scores(page)
    first = chart(page, "bars-learned")
    edit_cell(page, 0, EDIT)
    status = page.locator("#workbench-status")
    expect(status).to_contain_text("differs from baseline in: happiness", timeout=60_000)
    page.wait_for_timeout(1000)  # a second, duplicate scoring of the edit would land here
    # one edit is scored once, and the status counts its encodings: each zero-shot template + the learned prompt
    from dferclip import load_model

    templates = len(load_model(TINY).config.zero_shot_templates)
    expect(status).to_contain_text(f"clip: clip.webm · {templates + 1} text encoding(s) computed")
    assert_charts_match_scores(page)

    pick_model(page, OTHER)
    expect(page.locator("#weights-banner")).not_to_contain_text("random:dferclip-tiny", timeout=60_000)
    expect(status).to_contain_text("differs from baseline in: happiness", timeout=60_000)
    page.wait_for_timeout(500)
    expect(page.locator("#descriptions-table")).to_contain_text(EDIT)  # the edit survived the switch
    assert chart(page, "bars-learned") != first  # another model's numbers ...
    assert_charts_match_scores(page)  # ... and the charts show this result, not the previous one
    assert not page.errors, page.errors


def test_a_class_set_change_puts_edits_aside_and_restores_them(page):
    from playwright.sync_api import expect

    rescore_and_wait(page, expect)
    edit_cell(page, 0, SET_ASIDE_EDIT)
    expect(page.locator("#workbench-status")).to_contain_text("differs from baseline", timeout=60_000)
    page.get_by_role("radio", name="MAFW").check()
    expect(page.locator("#workbench-status")).to_contain_text("put aside", timeout=60_000)
    expect(page.locator("#descriptions-table")).to_contain_text("contempt")
    expect(page.locator("#descriptions-table")).not_to_contain_text(SET_ASIDE_EDIT)
    page.get_by_role("button", name="Restore edits").click()
    expect(page.locator("#descriptions-table")).to_contain_text(SET_ASIDE_EDIT, timeout=60_000)
    expect(page.locator("#workbench-status")).to_contain_text("differs from baseline in: happiness")
    expect(page.get_by_role("button", name="Restore edits")).to_be_hidden()
    assert_charts_match_scores(page)

    # custom: nothing happens until names are typed, and the page says how to apply them
    page.get_by_role("radio", name="custom").check()
    expect(page.locator("#workbench-status")).to_contain_text("press Enter", timeout=30_000)
    expect(page.locator("#descriptions-table")).to_contain_text(SET_ASIDE_EDIT)
    assert not page.get_by_text("Error").count()
    assert not page.errors, page.errors


def test_a_row_for_any_class(page):
    from playwright.sync_api import expect

    rescore_and_wait(page, expect)
    page.get_by_label("Add a row for").click()
    page.get_by_role("option", name="anger").click()
    page.get_by_role("button", name="Add descriptor row").click()
    expect(page.locator("#descriptions-table").get_by_test_id("cell-7-0")).to_be_attached(timeout=30_000)
    classes = [page.locator("#descriptions-table").get_by_test_id(f"cell-{r}-0").inner_text().strip()
               for r in range(8)]
    assert classes[3:5] == ["anger", "anger"], classes
    edit_cell(page, 4, "clenched teeth and a hard stare")
    expect(page.locator("#workbench-contributions")).to_contain_text("clenched teeth", timeout=60_000)
    assert not page.errors, page.errors


def test_evaluation_labels_are_matched_by_class_name(page, tmp_path):
    from playwright.sync_api import expect

    clip = feat_clip("single_face.mp4")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\n{clip},happiness\n{clip},sadness\n{clip},neutral\n")
    page.get_by_text("Evaluation set (clips + labels)").click()
    page.get_by_label("and its labels CSV (path)").fill(str(labels))
    page.get_by_role("button", name="Load evaluation set").click()
    metrics = page.locator("#workbench-metrics")
    expect(page.locator("#workbench-status")).to_contain_text("Evaluation set: 3 clips", timeout=120_000)
    expect(metrics).to_contain_text("zero-shot")

    page.get_by_role("radio", name="custom").check()
    custom = page.locator("#custom-classes textarea, #custom-classes input").first
    custom.fill("happiness, sadness, bored")
    custom.press("Enter")
    expect(page.locator("#descriptions-table")).to_contain_text("bored", timeout=60_000)
    confusion = page.get_by_text("left out")
    expect(confusion).to_be_visible(timeout=30_000)
    expect(page.get_by_text(re.compile(r"neutral \(1\)"))).to_be_visible()
    body = page.locator("body").inner_text()
    assert "over the other 2 clip(s)" in body
    # the confusion matrix counts 2 clips: happiness and sadness rows, nothing labelled bored
    assert re.search(r"confusion \(2 clips\)", body), body[-1500:]
    bored_row = re.search(r"bored\s+0\s+0\s+0", body)
    assert bored_row, body[-1500:]
    uar = table_column(page, "workbench-metrics", "UAR")
    assert all(re.fullmatch(r"\d+\.\d\d", v) for v in uar.values()), uar
    assert not page.errors, page.errors


def test_a_model_that_cannot_load_here_says_so(page):
    from playwright.sync_api import expect

    rescore_and_wait(page, expect)
    page.get_by_label("Model", exact=True).click()
    option = page.get_by_role("option", name=re.compile("zero-shot CLIP"))
    expect(option).to_contain_text("unavailable here")  # said before it is picked
    option.click()
    toast = page.get_by_text(re.compile("Cannot load zero-shot CLIP"))
    expect(toast.first).to_be_visible(timeout=30_000)
    page.wait_for_timeout(2000)
    assert toast.count() == 1, [toast.nth(i).evaluate("e => e.outerHTML.slice(0, 300)") for i in range(toast.count())]
    expect(page.get_by_label("Model", exact=True)).to_have_value(re.compile("tiny A|dferclip-tiny"))
    expect(page.locator("#descriptions-table")).to_contain_text("a smiling mouth")
    assert page.locator(".error").count() == 0  # no Error panel or badges on the outputs
    assert_charts_match_scores(page)
    assert not page.errors, page.errors


def box(page, selector: str) -> dict:
    b = page.locator(selector).first.bounding_box()
    assert b is not None, f"{selector} not rendered"
    return b


def test_the_app_at_400_px(tmp_path):
    """Phone width: the model bar stacks, the banner reads as text, the clip input is above the fold, the
    timeline legend is whole and the Descriptions charts keep their labels and bars readable."""
    from playwright.sync_api import expect, sync_playwright
    from test_app_browser import served_app, upload

    with served_app({"DFERCLIP_MODEL": TINY}, tmp_path / "app.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 400, "height": 800})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        expect(page.locator("#clip-input")).to_be_visible(timeout=60_000)
        model, banner = box(page, "#model-bar .form, #model-bar [data-testid=dropdown], #model-bar label"), box(
            page, "#weights-banner")
        assert banner["y"] >= model["y"] + model["height"] - 1, (model, banner)  # stacked, not side by side
        assert banner["width"] >= 300 and banner["x"] + banner["width"] <= 400, banner
        spill = page.evaluate("() => { const e = document.querySelector('#weights-banner .weights-banner');"
                              " return e.scrollWidth - e.clientWidth; }")
        assert spill <= 1, spill
        assert box(page, "#clip-input")["y"] < 800  # something to act on above the fold

        upload(page, expect, feat_clip("single_face.mp4"))
        page.locator("#predict-button").click()
        expect(page.get_by_test_id("label-output-value")).to_be_visible(timeout=120_000)
        expect(page.locator("#timeline polyline")).to_have_count(7, timeout=30_000)  # DFEW's 7 classes
        expect(page.locator("#timeline svg")).to_be_visible()
        plot = box(page, "#timeline svg")
        assert plot["width"] >= 240 and plot["x"] + plot["width"] <= 400, plot  # most of the screen
        keys = page.locator("#timeline .dc-key")
        assert keys.count() >= 7
        for i in range(keys.count()):  # the legend wraps: every entry on the screen, none cut
            b = keys.nth(i).bounding_box()
            assert b["x"] >= 0 and b["x"] + b["width"] <= 400, (keys.nth(i).inner_text(), b)

        page.get_by_role("tab", name="Descriptions").click()
        expect(page.locator("#workbench-status")).to_contain_text("clip: ", timeout=60_000)
        for chart_id in ("bars-zero-shot", "bars-learned"):
            b = box(page, f"#{chart_id}")
            assert b["width"] >= 300, (chart_id, b)
            for group in page.locator(f"#{chart_id} .dc-group").all():
                assert group.bounding_box()["height"] < 40, group.inner_text()  # one line, not a letter a line
            for track in page.locator(f"#{chart_id} .dc-track").all():
                assert track.bounding_box()["width"] > 100
        browser.close()
    assert not errors, errors
