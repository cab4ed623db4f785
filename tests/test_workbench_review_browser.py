"""Defects a browser review of the Descriptions tab found (issue 21, item 4), each seen where it was seen:
a click in the table ran a hidden explanation, an empty new row raised an error, a bad save name put error
badges on unrelated outputs, and after Save the status still said "differs from baseline"."""
import re
import threading

import pytest
from test_workbench_newcomer_browser import (  # noqa: F401
    ARGS,
    OTHER,
    app_url,
    edit_cell,
    page,
    pick_model,
    pytestmark,
    rescore_and_wait,
    served_workbench,
)

EXPLAIN_TITLE = "Where and when the current clip matches a descriptor"


def test_a_table_click_explains_only_with_the_section_open_and_an_empty_row_is_no_error(page):  # noqa: F811
    from playwright.sync_api import expect

    rescore_and_wait(page, expect)
    table = page.locator("#descriptions-table")
    note = page.locator("#explain-descriptor-note")
    table.get_by_test_id("cell-0-1").click()  # the section is closed (its contents not even drawn)
    page.wait_for_timeout(3000)
    page.get_by_text(EXPLAIN_TITLE).click()
    text = page.locator("#explain-row-text textarea, #explain-row-text input").first
    expect(text).to_have_value(re.compile("smil"), timeout=10_000)  # the click filled the row in ...
    assert (note.text_content() or "").strip() == ""  # ... and explained nothing while the section was closed
    page.get_by_text(EXPLAIN_TITLE).click()  # closed again
    page.get_by_role("button", name="Add descriptor row").click()
    expect(table.get_by_test_id("cell-1-1")).to_have_text("", timeout=10_000)
    table.get_by_test_id("cell-1-1").click()  # the new, empty row
    page.wait_for_timeout(3000)
    expect(page.get_by_text("Pick a descriptor row")).to_have_count(0)
    page.get_by_text(EXPLAIN_TITLE).click()  # open: now a click on a row with a text explains it
    table.get_by_test_id("cell-0-1").click()
    expect(note).to_have_text(re.compile(r"\S"), timeout=60_000)
    assert not page.errors, page.errors


def test_save_makes_the_set_the_baseline_and_a_bad_name_marks_only_its_message(page):  # noqa: F811
    from playwright.sync_api import expect

    rescore_and_wait(page, expect)
    edit_cell(page, 2, "eyelids heavy, gaze unfocused")
    status = page.locator("#workbench-status")
    expect(status).to_contain_text("differs from baseline in: neutral", timeout=60_000)
    page.get_by_text("Save, download, upload, diff").click()
    name = page.get_by_role("textbox", name="Name")
    name.fill("../bad")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text(re.compile("invalid"))).not_to_have_count(0, timeout=10_000)  # said, once
    page.wait_for_timeout(1000)
    for unrelated in ("diff-a", "diff-b", "saved-set", "workbench-status"):  # no "Error" badge on these
        expect(page.locator(f"#{unrelated}")).not_to_contain_text("Error")
    expect(status).to_contain_text("differs from baseline")
    name.fill("review-set")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#save-message")).to_contain_text("it is the new baseline", timeout=30_000)
    expect(status).to_contain_text("same as baseline", timeout=10_000)
    expect(status).not_to_contain_text("differs from baseline")
    assert not page.errors, page.errors



def test_before_any_clip_the_tables_are_labelled_and_an_edit_moves_numbers_under_the_table(page):  # noqa: F811
    from playwright.sync_api import expect

    status = page.locator("#workbench-status")
    expect(status).to_contain_text("No clip yet")  # the page as it opens, before anything ran
    heads = page.locator("#workbench-scores thead").inner_text()
    assert "class" in heads and "zero-shot %" in heads and not re.search(r"\b1\b", heads), heads
    assert "description" in page.locator("#workbench-contributions thead").inner_text()
    rescore_and_wait(page, expect)
    expect(status).to_contain_text(re.compile(r"Now: zero-shot \w+ \d+\.\d %.*learned \w+ \d+\.\d %"))
    edit_cell(page, 4, "eyes wide open, eyebrows raised high")
    expect(status).to_contain_text("differs from baseline in: surprise", timeout=60_000)
    expect(status).to_contain_text(re.compile(r"Now: zero-shot \w+ \d+\.\d % \([+−-]?[±\d.]+ vs baseline\)"))


def test_ferv39k_starts_from_its_own_set_and_says_why_the_text_is_dfew_s(page):  # noqa: F811
    from playwright.sync_api import expect

    page.get_by_role("radio", name="FERV39k").check()
    status = page.locator("#workbench-status")
    expect(status).to_contain_text("dferclip-official-ferv39k", timeout=60_000)
    expect(status).to_contain_text("FERV39k has DFEW's classes")
    expect(status).to_contain_text("the same sentences")


def test_generate_says_beforehand_what_it_will_do_and_a_failure_marks_only_its_own_line(page):  # noqa: F811
    """Items g and b: offline without the local model, the Generate section says so when it opens, in a
    visitor's words (no command line); the click then fails on the section's own status line alone."""
    from playwright.sync_api import expect

    rescore_and_wait(page, expect)
    page.get_by_text("Generate with an LLM").click()
    hint = page.locator("#generate-hint")
    expect(hint).to_contain_text("no internet connection", timeout=10_000)
    expect(hint).to_contain_text("edit the descriptions in the table by hand")
    assert "python -m" not in hint.inner_text() and "`" not in hint.inner_text()
    page.locator("#generator").get_by_text("a server").click()
    expect(hint).to_contain_text("one request per class", timeout=10_000)
    page.locator("#generator").get_by_text("local model").click()
    expect(hint).to_contain_text("no internet connection", timeout=10_000)
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.locator("#generate-status")).to_contain_text("Error", timeout=30_000)
    toast = page.get_by_text(re.compile("cannot write descriptions here"))
    expect(toast.first).to_be_visible(timeout=10_000)
    page.wait_for_timeout(1000)
    for unrelated in ("prompts-sent", "workbench-status", "descriptions-table", "workbench-scores"):
        expect(page.locator(f"#{unrelated}")).not_to_contain_text("Error")
    assert not page.errors, page.errors



@pytest.fixture(scope="module")
def held_loads():
    """The same app, where a model not loaded yet (other than the first) loads only when the test says so:
    (url, the gate that lets the load finish)."""
    from dferclip.runtime import ModelRegistry

    gate = threading.Event()

    class HeldLoads(ModelRegistry):
        def get(self, key=None):
            if key not in (None, self.default_key) and not self.is_loaded(key):
                gate.wait(120)  # a slow first load, as FineCLIPER's on a busy machine
            return super().get(key)

    with served_workbench(HeldLoads) as url:
        yield url, gate


def test_h_a_slow_first_load_says_what_loads_and_the_page_keeps_working_meanwhile(held_loads):
    """Item h: while a model loads for the first time, the banner says which, which step and for how long so
    far; the previous model stays in use, and an edit is scored meanwhile; then the new model takes over with
    the edits kept."""
    from playwright.sync_api import expect, sync_playwright

    url, gate = held_loads
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1400})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        rescore_and_wait(page, expect)
        banner, status = page.locator("#weights-banner"), page.locator("#workbench-status")
        pick_model(page, OTHER)
        expect(banner).to_contain_text(f"Loading {OTHER}", timeout=10_000)
        expect(banner).to_contain_text("step 1 of 2")
        expect(banner).to_contain_text(re.compile(r"[1-9]\d* s so far"), timeout=10_000)  # it counts
        expect(banner).to_contain_text("tiny A stays in use")
        edit_cell(page, 2, "eyelids heavy, gaze resting nowhere")  # meanwhile, with tiny A
        expect(status).to_contain_text("differs from baseline in: neutral", timeout=30_000)
        expect(banner).to_contain_text(f"Loading {OTHER}")  # still loading: the edit did not wait for it
        gate.set()
        expect(banner).not_to_contain_text("Loading", timeout=30_000)
        expect(page.get_by_label("Model", exact=True)).to_have_value(OTHER, timeout=10_000)
        expect(status).to_contain_text("differs from baseline in: neutral", timeout=30_000)  # edits kept
        browser.close()
    assert not errors, errors
