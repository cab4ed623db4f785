"""A real browser (Debian chromium via playwright) edits a description cell and sees the scores change; with a
FineCLIPER model it sees the positive/negative descriptor bars."""
import re
import shutil
import socket
from types import SimpleNamespace

import pytest

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")]

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
KEY = "random:dferclip-tiny"
FINE_KEY = "random:fineclipper-tiny"  # what DFERCLIP_MODEL=random:fineclipper-tiny puts first in the app
NUMBER = re.compile(r"-?\d+\.\d{3}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(key: str, frames: int):
    """The model bar and the workbench tab for model ``key``, with a random clip of ``frames`` frames as the
    page's current clip; returns (url, demo)."""
    import gradio as gr
    import torch

    from dferclip.runtime import ModelEntry, ModelRegistry
    from dferclip.ui.context import AppContext, ClipRecord, build_model_bar
    from dferclip.ui.descriptions_tab import build_workbench_tab

    from dferclip.backends import _EXPORT_LOCK

    ctx = AppContext(ModelRegistry([ModelEntry(key, "tiny random model", "explicit")], dev="cpu"))
    with _EXPORT_LOCK:  # torch.manual_seed shares tracing state with a conversion running in the background
        torch.manual_seed(0)
    clip = ClipRecord(path="clip.webm", model_key=key,
                      ingest=SimpleNamespace(video=torch.rand(1, frames, 3, 64, 64)), prediction=None)
    with gr.Blocks() as demo:
        build_model_bar(ctx)
        ctx.clip = gr.State(clip)  # the page's current clip, as the predict tab would leave it
        build_workbench_tab(ctx)
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return f"http://127.0.0.1:{port}/", demo


@pytest.fixture(scope="module")
def app_url():
    url, demo = serve(KEY, 16)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def fine_app_url():
    url, demo = serve(FINE_KEY, 8)
    yield url
    demo.close()


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def test_edit_a_cell_and_the_scores_change(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1600})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(app_url)
        page.get_by_role("button", name="Re-score").click()
        status = page.locator("#workbench-status")
        expect(status).to_contain_text("same as baseline", timeout=60_000)
        expect(page.locator("#workbench-contributions")).to_contain_text("furrowed eyebrows", timeout=30_000)
        before = text_of(page, "workbench-contributions")
        scores_before = text_of(page, "workbench-scores")
        assert "anger" in scores_before and "±0.00" in scores_before

        cell = page.locator("#descriptions-table").get_by_test_id("cell-3-1")
        cell.dblclick()
        editor = cell.locator("textarea, input").first
        editor.fill("deeply furrowed brows and a clenched jaw")
        editor.press("Enter")
        expect(status).to_contain_text("differs from baseline in: anger", timeout=60_000)
        contributions = page.locator("#workbench-contributions")
        expect(contributions).to_contain_text("clenched jaw", timeout=30_000)
        after = text_of(page, "workbench-contributions")
        assert "furrowed eyebrows, narrow eyes" in before and "furrowed eyebrows, narrow eyes" not in after
        # only anger's similarity and contribution (zero-shot and learned) changed: at most 4 new numbers
        new_numbers = set(NUMBER.findall(after)) - set(NUMBER.findall(before))
        assert 1 <= len(new_numbers) <= 4, new_numbers
        assert text_of(page, "workbench-scores") != scores_before
        page.wait_for_selector("#bars-zero-shot .dc-line", timeout=30_000)
        expect(page.locator("#workbench-pn")).to_be_hidden()  # DFER-CLIP: no positive/negative descriptors
        expect(page.locator("#workbench-pn-note")).to_be_hidden()
        page.screenshot(path=str(tmp_path / "workbench.png"), full_page=True)
        browser.close()
    assert not errors, errors


def test_fineclipper_shows_positive_and_negative_bars(fine_app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1600})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(fine_app_url)
        pn = page.locator("#workbench-pn")
        expect(pn).to_be_hidden()
        page.get_by_role("button", name="Re-score").click()
        expect(page.locator("#workbench-status")).to_contain_text("same as baseline", timeout=120_000)
        expect(pn).to_be_visible(timeout=30_000)
        expect(pn).to_contain_text("positive vs negative descriptors")
        expect(page.locator("#workbench-pn-note")).to_contain_text("cos⁻")
        expect(page.locator("#workbench-contributions")).to_contain_text(
            "negative: A person with an expression of no anger", timeout=30_000)
        pn.locator(".dc-line").first.wait_for(timeout=30_000)
        pn.scroll_into_view_if_needed()
        page.wait_for_timeout(1000)  # let the page settle before the screenshot
        legend = pn.inner_text()
        assert "positive" in legend and "negative" in legend, legend
        pn.screenshot(path=str(tmp_path / "pn.png"))
        browser.close()
    assert not errors, errors
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(tmp_path / "pn.png").convert("RGB"))
    # the fixed colour map: positive bars green (0, 128, 0), negative ones red (255, 0, 0)
    for rgb in ((0, 128, 0), (255, 0, 0)):
        assert (pixels == rgb).all(axis=-1).sum() > 200, rgb
