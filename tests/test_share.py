"""Sharing the Descriptions tab by link: the state travels in the link (checked like an uploaded set, bounded
before it is decoded), so a link survives a restart; the library and the CLI read it; the running public app
makes one, refuses malformed ones with one message, and a fresh browser opening a link made before a restart
sees the sender's scores."""
import base64
import json
import re
import shutil
import zlib
from urllib.parse import parse_qs, urlsplit

import pytest
from gradio_client import Client

from app_helpers import free_port
from dferclip.cli import main as cli_main
from dferclip.share import MAX_LINK_CHARS, SharedState, ShareError, decode, encode, link, state_from_link
from dferclip.text.descriptions import load_description_set

SET = "dferclip-official-dfew"


def _state(**kw) -> SharedState:
    ds = load_description_set(SET)
    edited = [list(d) for d in ds.descriptions]
    edited[3] = ["deeply furrowed brows and a clenched jaw"]
    return SharedState(**{"model": "random:dferclip-tiny", "descriptions": ds.with_descriptions(edited),
                          "combine": "max", "clip": "single_face.mp4", **kw})


def _token(data) -> str:
    raw = json.dumps(data).encode()
    return "1." + base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")


def test_a_link_round_trips_the_state():
    state = _state()
    url = link("https://org-dferclip.hf.space/?other=1#top", state)
    assert url.startswith("https://org-dferclip.hf.space/?s=1.") and "other" not in url and len(url) < 2000
    back = state_from_link(url)
    assert (back.model, back.combine, back.clip) == (state.model, state.combine, state.clip)
    assert back.descriptions.descriptions == state.descriptions.descriptions
    assert back.descriptions.classes == state.descriptions.classes and back.descriptions.name == SET
    assert state_from_link(encode(state)).descriptions.descriptions == state.descriptions.descriptions


@pytest.mark.parametrize("tamper, message", [
    (lambda t: t[: len(t) // 2], "damaged or cut short"),  # truncated
    (lambda t: t[:-8] + ("A" if t[-8] != "A" else "B") + t[-7:], "damaged or cut short"),  # a character changed
    (lambda t: "2" + t[1:], "another version of the app"),
    (lambda t: "", "no workbench state"),
    (lambda t: "1." + "A" * (MAX_LINK_CHARS + 1), "at most"),
    (lambda t: "1.%%%%", "damaged"),
])
def test_a_malformed_link_is_one_clear_error(tamper, message):
    with pytest.raises(ShareError, match=message):
        decode(tamper(encode(_state())))


def test_a_link_s_content_is_checked_like_an_uploaded_set():
    good = json.loads(zlib.decompress(base64.urlsafe_b64decode(encode(_state())[2:] + "==")))
    cases = {
        "names no model": {**good, "model": 3},
        "combine mode": {**good, "combine": "__import__('os')"},
        "not an example clip": {**good, "clip": "../../etc/passwd"},
        "longer than 1000 characters": {**good, "set": {**good["set"], "classes": [["anger", ["x" * 1001]]]}},
        "malformed": {**good, "set": {**good["set"], "classes": [["anger"]]}},
        "not a workbench state": [1, 2, 3],
    }
    for message, data in cases.items():
        with pytest.raises(ShareError, match=re.escape(message)):
            decode(_token(data))
    bomb = "1." + base64.urlsafe_b64encode(zlib.compress(b"{" + b" " * (4 << 20), 9)).decode().rstrip("=")
    assert len(bomb) < MAX_LINK_CHARS
    with pytest.raises(ShareError, match="damaged or cut short"):  # inflating stops at its bound
        decode(bomb)


def test_a_set_too_big_for_a_link_says_what_to_do():
    ds = load_description_set(SET)
    import random

    rng = random.Random(0)
    words = ["brow", "lip", "cheek", "jaw", "eye", "nose", "chin", "mouth", "lid", "frown", "smile", "tense"]
    big = ds.with_descriptions([[" ".join(rng.choice(words) + str(rng.randint(0, 999)) for _ in range(40))
                                 for _ in range(20)] for _ in ds.classes])
    with pytest.raises(ShareError, match="too big for a link.*download it as a file"):
        encode(SharedState("random", big, "max", None))


def test_cli_turns_a_link_into_a_set_file_and_never_overwrites(tmp_path, capsys):
    url = link("http://127.0.0.1:7860/", _state())
    out = tmp_path / "shared.json"
    assert cli_main(["describe", "from-link", url, "-o", str(out)]) == 0
    assert "model random:dferclip-tiny, combine max, example clip single_face.mp4" in capsys.readouterr().out
    written = load_description_set(out)
    assert written.descriptions == _state().descriptions.descriptions
    assert cli_main(["describe", "from-link", url, "-o", str(out)]) != 0
    assert "never overwritten" in capsys.readouterr().err
    assert cli_main(["describe", "from-link", url[:-30], "-o", str(tmp_path / "cut.json")]) != 0
    assert "damaged or cut short" in capsys.readouterr().err and not (tmp_path / "cut.json").exists()


# --- the running public app, and a restart between sending and opening ------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Tiny weights saved once, so an app started again runs the same model (as a restarted Space does)."""
    import dferclip
    import torch

    torch.manual_seed(0)
    return str(dferclip.save_model(dferclip.load_model("random:dferclip-tiny"), tmp_path_factory.mktemp("w") / "m"))


def start_app(weights: str, tmp_path, monkeypatch):
    import app

    for k, v in {"DFERCLIP_DESCRIPTIONS": str(tmp_path / "descriptions"), "DFERCLIP_CACHE": str(tmp_path / "cache"),
                 "DFERCLIP_BACKEND": "eager"}.items():
        monkeypatch.setenv(k, v)
    demo = app.build_demo(weights, mode="public")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs(demo))
    return demo, f"http://127.0.0.1:{port}/"


def stop_app(demo) -> None:
    demo.close()
    demo.ctx.close()


def _rows(state: SharedState) -> dict:
    ds = state.descriptions
    return {"headers": ["class", "description"], "metadata": None,
            "data": [[c, d] for c, descs in zip(ds.classes, ds.descriptions) for d in descs]}


def test_the_app_makes_a_link_that_opens_after_a_restart_and_refuses_bad_ones(weights, tmp_path, monkeypatch):
    demo, url = start_app(weights, tmp_path / "a", monkeypatch)
    try:
        c = Client(url, verbose=False, download_files=False)
        state = _state(model=weights, clip=None)
        made, note = c.predict(weights, _rows(state), "max", api_name="/share_link")
        assert made.startswith(url + "?s=1.") and "Nothing is stored on the server" in note
    finally:
        stop_app(demo)
    demo, url = start_app(weights, tmp_path / "b", monkeypatch)  # a restart: nothing of the first app is left
    try:
        c = Client(url, verbose=False, download_files=False)
        opened = c.predict(made, api_name="/open_link")
        assert opened["model"] == weights and opened["combine"] == "max" and opened["not_restored"] == []
        assert [cl["descriptions"] for cl in opened["set"]["classes"]] == state.descriptions.descriptions
        token = parse_qs(urlsplit(made).query)["s"][0]
        for bad in (made[:-20], made.replace(token, token[:10] + "x" + token[11:]), "?s=2.abc", "hello",
                    "?s=" + "A" * 7000, url + "?s=" + _token({"v": "1", "model": "/etc/passwd"})):
            with pytest.raises(Exception) as info:
                c.predict(bad, api_name="/open_link")
            message = str(info.value)
            assert "This link could not be opened" in message and "Traceback" not in message, message
        # a model this app does not offer: the set opens with the default model, and says so
        other = c.predict(link(url, _state(model="mafw-fold9")), api_name="/open_link")
        assert other["model"] == demo.ctx.registry.default_key and "not offered here" in other["not_restored"][0]
    finally:
        stop_app(demo)


# --- a real browser: send, restart, open in a fresh one -----------------------------------------------------
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def cells(page, elem_id: str) -> list[str]:
    """A table's cells, row by row (its sticky header row left out)."""
    return [t.strip() for t in page.locator(f"#{elem_id}").get_by_role("gridcell").all_inner_texts()]


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_a_fresh_browser_opens_a_link_made_before_a_restart_with_the_sender_s_scores(weights, tmp_path,
                                                                                     monkeypatch):
    from playwright.sync_api import expect, sync_playwright
    from test_workbench_newcomer_browser import edit_cell

    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        demo, url = start_app(weights, tmp_path / "a", monkeypatch)
        try:
            sender = browser.new_context(viewport={"width": 1400, "height": 1200}).new_page()
            sender.on("pageerror", lambda e: errors.append(str(e)))
            sender.goto(url)
            sender.get_by_text("Man talking and smiling").first.click()  # the example: loaded and predicted
            expect(sender.locator("#predict-note")).to_contain_text("Face found", timeout=120_000)
            sender.get_by_role("tab", name="Descriptions").click()
            status = sender.locator("#workbench-status")
            expect(status).to_contain_text("single_face.mp4", timeout=60_000)
            edit_cell(sender, 3, "deeply furrowed brows and a clenched jaw")
            expect(status).to_contain_text("differs from baseline in: anger", timeout=60_000)
            sender.get_by_role("button", name="Copy link").click()
            box = sender.locator("#share-link textarea, #share-link input").first
            expect(box).to_have_value(re.compile(r"\?s=1\."), timeout=30_000)
            shared = box.input_value()
            expect(sender).to_have_url(shared, timeout=10_000)  # the address bar carries it too
            scores = cells(sender, "workbench-scores")
            assert len(scores) >= 7 * 9 and any(re.fullmatch(r"[+-]\d+\.\d\d", c) for c in scores)
        finally:
            stop_app(demo)
        demo, url2 = start_app(weights, tmp_path / "b", monkeypatch)
        try:
            receiver = browser.new_context(viewport={"width": 1400, "height": 1200}).new_page()
            receiver.on("pageerror", lambda e: errors.append(str(e)))
            receiver.goto(shared.replace(url, url2))
            expect(receiver.locator("#share-note")).to_contain_text("Opened from a shared link", timeout=180_000)
            expect(receiver.locator("#share-note")).to_contain_text("the example clip single_face.mp4")
            expect(receiver.locator("#workbench-status")).to_contain_text("differs from baseline in: anger")
            expect(receiver.locator("#workbench-scores").get_by_role("gridcell")).to_have_count(len(scores),
                                                                                               timeout=30_000)
            assert cells(receiver, "workbench-scores") == scores  # the sender's numbers, cell by cell
            expect(receiver.locator("#descriptions-table")).to_contain_text("clenched jaw")
            receiver.screenshot(path=str(tmp_path / "opened.png"), full_page=True)
            # a tampered link: one warning, the default page
            bad = browser.new_context(viewport={"width": 400, "height": 900}).new_page()
            bad.on("pageerror", lambda e: errors.append(str(e)))
            bad.goto(url2 + "?s=1.garbage")
            expect(bad.get_by_text("This link could not be opened")).to_be_visible(timeout=60_000)
            expect(bad.get_by_role("tab", name="Predict")).to_have_attribute("aria-selected", "true")
            expect(bad.get_by_text("Error", exact=True)).to_have_count(0)  # a warning, never an error panel
        finally:
            stop_app(demo)
        browser.close()
    assert not errors, errors

