"""The "Live" tab: the webcam streamed to the server, the expression over the last frames (as many as the model
takes: 16 for DFER-CLIP, 32 for EmoCLIP), the face boxed; other faces in the frame get a thin box of their own
(the expression is read for the main face only).

The page streams the webcam (``Image.stream``); API clients send one frame per call to ``/live``.
The browser sends a frame every :data:`STREAM_EVERY_S` seconds, but never while the previous one is still
being processed, and the server always takes the newest frame it has: frames that arrive during a forward
are dropped, nothing queues, so the result never falls further behind the camera. Each frame is encoded once
(face found, cropped, through the image tower); every update scores the last encoded frames with the
temporal model, which is cheap, so updates come several times a second on a 2-core CPU.
"""
from __future__ import annotations

import html
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import gradio as gr
import numpy as np
import torch

from ..predict import encode_frames, join_features, mid_level_renders, score_features
from .. import zero_gpu
from ..runtime import UNTRAINED_WARNING, to_device
from ..video.decode import sample_indices
from ..video.faces import (
    TrackingConfig,
    center_region,
    crop_boxes,
    crop_region,
    crop_square,
    fill_track,
    iou,
    main_face_track,
)
from ..video.ingest import DEFAULT_MARGIN, default_detector
from .context import AppContext

STREAM_EVERY_S = 0.2  # the browser sends a frame at most this often (and only once the last one is done)
TIME_LIMIT_S = 120  # one live session's length; the visitor starts again after it
MAX_SIDE = 640  # frames are downscaled to this longer side before anything else


@dataclass
class LiveSession:
    """One visitor's stream: the last frames' detections and tower features, and how the updates go."""

    model_key: str
    num_frames: int
    started: float = field(default_factory=time.monotonic)
    times: deque = field(default_factory=deque)  # seconds since the start, per kept frame
    detections: deque = field(default_factory=deque)  # the detector's faces per kept frame
    features: deque = field(default_factory=deque)  # tower features (1, ...) per kept frame
    updates: int = 0
    last_update: Optional[float] = None
    intervals: deque = field(default_factory=lambda: deque(maxlen=10))  # seconds between recent updates

    def keep(self, t: float, dets: list, feats) -> None:
        for queue, item in ((self.times, t), (self.detections, dets), (self.features, feats)):
            queue.append(item)
            while len(queue) > self.num_frames:
                queue.popleft()


def _downscaled(image: np.ndarray) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale >= 1:
        return np.ascontiguousarray(image)
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def _newest_box(session: LiveSession, frame_size, tracking: TrackingConfig):
    """(the main face's box in the newest frame, where the model's crop is cut). The box is None unless the
    face was detected there (:func:`~dferclip.video.faces.face_boxes` holds a box only inside a gap between
    detections, which the newest frame cannot yet be known to be in); the crop keeps the last detection's place
    for at most ``tracking.max_hold_s``, so one missed detection does not feed the model the frame's centre."""
    times = list(session.times)
    track = main_face_track(list(session.detections), times, frame_size, tracking)
    if track is None:
        return None, None
    detected = [None if d is None else d.box for d in track.detections]
    return fill_track(track, times, tracking.max_hold_s)[0][-1], crop_boxes(times, detected, tracking.max_hold_s)[-1]


BOX_COLOUR = (255, 64, 160)
OTHER_FACE_COLOUR = (200, 200, 200)  # faces besides the one read
TAG_COLOUR = (49, 46, 129)  # the caption's background: dark indigo, white text on it


def other_faces(dets: list, box, tracking: TrackingConfig) -> list:
    """The boxes of the frame's confident detections that are not the main face's ``box``."""
    return [d.box for d in dets if d.score >= tracking.min_score and (box is None or iou(d.box, box) < 0.5)]


def _annotated(image: np.ndarray, box, caption: str, others: tuple = ()) -> np.ndarray:
    """The frame with the face box and the expression drawn on it: a caption sized to the frame (readable at a
    phone's width), white on a dark tag above the box, or at the bottom left without one; ``others`` (other
    faces' boxes) get a thin grey box."""
    import cv2

    out = image.copy()
    side = max(out.shape[:2])
    thick = max(2, round(side / 240))
    for other in others:
        x0, y0, x1, y1 = (int(round(v)) for v in other)
        cv2.rectangle(out, (x0, y0), (x1, y1), OTHER_FACE_COLOUR, max(1, thick // 2))
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.6, side / 480)
    weight = max(1, round(2 * scale))
    (tw, th), base = cv2.getTextSize(caption, font, scale, weight)
    pad = max(3, round(5 * scale))
    tag_w, tag_h = tw + 2 * pad, th + base + 2 * pad
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), BOX_COLOUR, thick)
        left, top = max(x0, 0), max(y0 - thick - tag_h, 0)
    else:
        left, top = 0, out.shape[0] - tag_h
    left = max(0, min(left, out.shape[1] - tag_w))
    cv2.rectangle(out, (left, top), (left + tag_w, top + tag_h), TAG_COLOUR, -1)
    cv2.putText(out, caption, (left + pad, top + pad + th), font, scale, (255, 255, 255), weight, cv2.LINE_AA)
    return out


@zero_gpu.estimate(lambda x, *args, **kwargs: 10)
def frame_scores(model, x: torch.Tensor, renders, kept: list, positions: torch.Tensor, dtype=None):
    """The device part of a live step: the new frame's tower features and the logits of the kept frames plus
    it, both on the CPU (the features stay in the visitor's session between steps)."""
    dev = next(model.parameters()).device
    new = encode_frames(model, x, dev=dev, dtype=dtype, renders=renders)
    feats = join_features([to_device(f, dev) for f in kept] + [new])
    logits, _, _ = score_features(model, feats, positions, dev=dev, dtype=dtype)
    return to_device(new, "cpu"), logits


def live_step(ctx: AppContext, frame: Optional[np.ndarray], session: Optional[LiveSession],
              model_key: Optional[str], tracking: TrackingConfig = TrackingConfig()) -> tuple:
    """One webcam frame in: (annotated frame, expression over the last frames, status, session) out."""
    if frame is None:
        return gr.skip(), gr.skip(), gr.skip(), session
    start = time.monotonic()
    model_key = model_key or ctx.registry.default_key
    model = ctx.model_for_event(model_key)
    cfg = model.input_config
    if session is None or session.model_key != model_key:
        session = LiveSession(model_key, cfg.num_frames)
    image = _downscaled(np.asarray(frame)[..., :3])
    size = (image.shape[1], image.shape[0])
    dets = default_detector().detect([image])[0]
    t = start - session.started
    session.keep(t, dets, None)
    box, crop_box = _newest_box(session, size, tracking)
    region = center_region(size) if crop_box is None else crop_region(crop_box, DEFAULT_MARGIN, size)
    crop = np.array(crop_square(image, region, cfg.image_size, resize=cfg.resize))  # writable: torch shares its memory
    x = cfg.normalize(torch.from_numpy(crop).permute(2, 0, 1)[None].float().div_(255))
    n = len(session.features)
    positions = torch.as_tensor([sample_indices(n, cfg.num_frames)])  # fewer than the model's: the last repeated
    session.features[-1], logits = zero_gpu.run(model, frame_scores, x, mid_level_renders(model, x),
                                                list(session.features)[:-1], positions, dtype=ctx.registry.dtype)
    probs = dict(zip(model.class_names, map(float, logits.softmax(-1)[0])))
    top = max(probs, key=probs.get)
    now = time.monotonic()
    if session.last_update is not None:
        session.intervals.append(now - session.last_update)
    session.last_update = now
    session.updates += 1
    rate = len(session.intervals) / sum(session.intervals) if session.intervals else 0.0
    title = "Expression over the last frames" + ("" if model.weights_info.get("trained") else
                                                 f" · {UNTRAINED_WARNING}")
    status = (f"update {session.updates} · frame at {t:.2f} s · processed in {1000 * (now - start):.0f} ms · "
              f"{rate:.1f} updates/s · {n}/{cfg.num_frames} frames · "
              + ("face tracked" if box is not None else "no face in this frame: the model reads where it just was"
                 if crop_box is not None else "no face: centre of the frame"))
    caption = f"{top} {100 * probs[top]:.0f}%"
    others = other_faces(dets, box, tracking)
    if others:
        status += f" · {len(others)} other face{'s' if len(others) > 1 else ''} (thin box): the largest is read"
    return (_annotated(image, box, caption, others), gr.Label(value=probs, label=title), html.escape(status), session)


def view_buttons() -> list[str]:
    """The live view's buttons: Gradio's share button posts to a Space's discussions, so only on a Space."""
    return ["download", "fullscreen"] + (["share"] if os.environ.get("SPACE_ID") else [])


def build_live_tab(ctx: AppContext) -> None:
    """The tab: the webcam in, the boxed frame, the label and a status line out (inside ``gr.Blocks``)."""
    with gr.Tab("Live", id="live"):
        gr.Markdown("Start the webcam: the expression is read from your last frames (16 for DFER-CLIP, 32 for "
                    "EmoCLIP), several times a "
                    f"second. Frames that arrive while one is processed are skipped, so it stays current. A "
                    f"session lasts {TIME_LIMIT_S // 60} minutes.", elem_classes=["hint"])
        with gr.Row():
            with gr.Column(scale=5):
                camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                                  elem_id="live-camera", webcam_options=gr.WebcamOptions(mirror=True))
            with gr.Column(scale=5):
                view = gr.Image(label="What the model sees (face box)", interactive=False, elem_id="live-view",
                                format="jpeg", buttons=view_buttons())
            with gr.Column(scale=4):
                label = gr.Label(num_top_classes=3, label="Expression over the last frames", elem_id="live-label")
                status = gr.Markdown(elem_id="live-status", elem_classes=["hint"])
        session = gr.State(None)
        def step(frame, session, model_key):
            with ctx.scheduler.quick():  # long jobs give way to live frames too
                return live_step(ctx, frame, session, model_key)

        io = {"inputs": [camera, session, ctx.model_dropdown], "outputs": [view, label, status, session],
              "concurrency_id": "live", "concurrency_limit": ctx.concurrency_limit, "show_progress": "hidden"}
        camera.stream(step, stream_every=STREAM_EVERY_S, time_limit=TIME_LIMIT_S, api_visibility="private", **io)
        # the same step for API clients, one frame per call (gradio_client does not speak the stream protocol);
        # a client's successive calls share one session, so they fill the same window of the model's frames
        gr.Button(visible=False, elem_id="live-api").click(step, api_name="live", **io)
