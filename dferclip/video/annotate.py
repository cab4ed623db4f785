"""The clip written back with what the model saw drawn on it: each face's box and running expression.

    from dferclip.video.annotate import annotate_prediction
    path = annotate_prediction(pred, "clip.mp4", "annotated.mp4")   # H.264 .mp4, or VP9 .webm without it
    path = annotate_prediction(per_face_preds, "clip.mp4", "annotated.mp4")   # every face, its own colour

Faces are detected on every frame of the clip (a first decoding pass) and tracked
(:func:`~dferclip.video.tracking.track_faces`); each prediction is drawn on the track it was made for (its
``ingest.track_id``'s boxes, matched by overlap). A frame gets a face's box by
:func:`~dferclip.video.faces.face_boxes`: where the face was detected, or held (dashed, "(held)") across a
miss of at most ``max_hold_s`` between detections, never on a frame without a face near it (a title card, an
empty shot). The label at time t is the top class of the timeline windows covering t
(their mean), else of the nearest window, else of the whole clip. Browser-playable: H.264 (yuv420p, fast
start) when the installed PyAV has an H.264 encoder, else VP9 in WebM; the returned path's suffix says which.
"""
from __future__ import annotations

import dataclasses
import logging
from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import cv2
import numpy as np

from .. import files, pacing
from .decode import Limits, VideoReader
from .faces import FaceDetector, TrackingConfig, face_boxes, shared_boxes
from .tracking import track_faces

log = logging.getLogger(__name__)

H264_ENCODERS = ("libx264", "libopenh264")
TIME_BASE = Fraction(1, 90000)
BOX_COLOUR = (255, 200, 0)  # RGB
FACE_COLOURS = (BOX_COLOUR, (0, 200, 255), (255, 90, 200), (120, 230, 90), (255, 140, 60), (170, 130, 255))
NO_FACE_COLOUR = (160, 160, 160)
DETECT_CHUNK = 16  # frames searched for faces at once
DASH = 12  # pixels: a held box's dash and gap


def video_encoder(out_path: str | Path) -> tuple[str, Path]:
    """(encoder, path with its container's suffix): H.264 in .mp4 when available (unless a .webm is asked
    for), else VP9 in .webm."""
    out = Path(out_path)
    if out.suffix.lower() != ".webm":
        for name in H264_ENCODERS:
            if name in av.codecs_available:
                return name, out if out.suffix.lower() in (".mp4", ".m4v", ".mov") else out.with_suffix(".mp4")
    return "libvpx-vp9", out.with_suffix(".webm")


def annotate_prediction(prediction, clip_path: str | Path, out_path: str | Path,
                        limits: Optional[Limits] = None, detector: Optional[FaceDetector] = None,
                        tracking: TrackingConfig = TrackingConfig()) -> Path:
    """Write ``clip_path`` with each predicted face's box and running expression drawn, in its own colour:
    ``prediction`` is one :class:`~dferclip.predict.Prediction` or a list of them, one per face (from
    ``predict_faces``). Returns the file written (``out_path``, its suffix changed to .webm when H.264 cannot be
    encoded here). Atomic: a failure leaves nothing behind."""
    predictions = list(prediction) if isinstance(prediction, (list, tuple)) else [prediction]
    encoder, out = video_encoder(out_path)
    if out != Path(out_path):
        log.info("no H.264 encoder in this PyAV: writing VP9 to %s", out)
    labels = [RunningLabel(p) for p in predictions]
    source = predictions[0].ingest.source
    # every frame is read once and let go, so the bounds on kept frames do not apply; the caller's others do
    # (the app's: its file size, duration and decoding deadline)
    limits = dataclasses.replace(limits or Limits(decode_timeout_s=max(600.0, 4 * (source.duration_s or 0))),
                                 max_kept_frames=max(source.num_frames, 1), max_frame_bytes=1 << 62)
    rate = Fraction(source.fps or 25).limit_denominator(1001)
    scan = clip_face_tracks(clip_path, limits, detector, tracking)
    boxes = [scan.boxes(scan.track_for(p.ingest), tracking) for p in predictions]

    def write(tmp: str) -> None:
        fmt = "webm" if out.suffix.lower() == ".webm" else "mp4"
        faststart = {"movflags": "+faststart"} if fmt == "mp4" else {}  # plays while it downloads
        with VideoReader(clip_path, limits) as reader, av.open(tmp, "w", format=fmt, options=faststart) as container:
            stream = None
            last_pts = -1
            for i, frame in enumerate(reader.iter_frames(range(reader.num_frames))):
                if i % 25 == 0:
                    pacing.checkpoint()
                image = frame.image
                if stream is None:
                    stream = _add_stream(container, encoder, rate, image.shape[1], image.shape[0])
                faces = []
                for k, (face, label) in enumerate(zip(boxes, labels)):
                    box, held = face.get(frame.index, (None, False))
                    if box is not None:
                        faces.append(FaceMark(np.asarray(box) * frame.scale, *label.at(frame.time_s), held=held,
                                              colour=FACE_COLOURS[k % len(FACE_COLOURS)]))
                drawn = draw_faces(image, faces, *labels[0].at(frame.time_s))
                video_frame = av.VideoFrame.from_ndarray(_even(drawn), format="rgb24")
                last_pts = max(last_pts + 1, round(frame.time_s / TIME_BASE))
                video_frame.pts, video_frame.time_base = last_pts, TIME_BASE
                container.mux(stream.encode(video_frame))
            if stream is not None:
                container.mux(stream.encode())

    files.atomic_write_with(out, write)
    return out


def _add_stream(container, encoder: str, rate: Fraction, width: int, height: int):
    options = ({"preset": "veryfast", "crf": "20"} if encoder == "libx264" else
               {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b:v": "0"} if encoder == "libvpx-vp9" else {})
    stream = container.add_stream(encoder, rate=rate, options=options)
    stream.width, stream.height = width - width % 2, height - height % 2
    stream.pix_fmt = "yuv420p"
    stream.time_base = TIME_BASE
    stream.codec_context.time_base = TIME_BASE
    return stream


def _even(image: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: drop a last odd row/column."""
    h, w = image.shape[:2]
    return image[: h - h % 2, : w - w % 2]


@dataclasses.dataclass
class ClipFaces:
    """Every frame of a clip searched for faces and the faces tracked: ``tracks[k].detections`` align with
    ``indices``/``times``; ``main`` is the main face's track id (None without a face)."""

    indices: list
    times: list
    tracks: list
    main: Optional[int]

    def track_for(self, ingest) -> Optional[object]:
        """The track a prediction was made for: the main one for a main-face prediction, else the one whose
        detections overlap the prediction's detected boxes on the most frames."""
        if not self.tracks:
            return None
        if getattr(ingest, "track_id", None) is None or getattr(ingest, "main", True):
            return next(t for t in self.tracks if t.id == self.main)
        own = {m.index: m.box for m in ingest.frames if m.confidence is not None}

        def overlap(track) -> int:
            return shared_boxes({i: d.box for i, d in zip(self.indices, track.detections) if d is not None}, own)

        best = max(self.tracks, key=overlap)
        return best if overlap(best) else None

    def boxes(self, track, tracking: TrackingConfig = TrackingConfig()) -> dict[int, tuple[Optional[tuple], bool]]:
        """Frame index -> (the track's box or None, held), by :func:`~dferclip.video.faces.face_boxes`."""
        if track is None:
            return {}
        detected = [None if d is None else d.box for d in track.detections]
        return dict(zip(self.indices, zip(*face_boxes(self.times, detected, tracking.max_hold_s))))


def clip_face_tracks(clip_path: str | Path, limits: Optional[Limits] = None, detector: Optional[FaceDetector] = None,
                     tracking: TrackingConfig = TrackingConfig()) -> ClipFaces:
    """Every frame of the clip decoded and searched for faces, and the faces tracked."""
    from .ingest import _detect, default_detector

    detector = detector or default_detector()
    indices, found = [], []

    def search(chunk) -> None:
        found.extend(_detect(detector, chunk)[0])
        indices.extend(f.index for f in chunk)
        pacing.checkpoint()

    with VideoReader(clip_path, limits or Limits()) as reader:
        chunk = []
        for frame in reader.iter_frames(range(reader.num_frames)):
            chunk.append(frame)
            if len(chunk) == DETECT_CHUNK:
                search(chunk)
                chunk = []
        if chunk:
            search(chunk)
        size = (reader.info.width, reader.info.height)
    tracks, main = track_faces(found, size, tracking) if found else ([], None)
    return ClipFaces(indices, [f.time_s for f in found], tracks, main)


def clip_face_boxes(clip_path: str | Path, limits: Optional[Limits] = None, detector: Optional[FaceDetector] = None,
                    tracking: TrackingConfig = TrackingConfig()) -> dict[int, tuple[Optional[tuple], bool]]:
    """Frame index -> (the main face's box in source pixels or None, held): every frame decoded and searched,
    the boxes given by :func:`~dferclip.video.faces.face_boxes`."""
    scan = clip_face_tracks(clip_path, limits, detector, tracking)
    return scan.boxes(next((t for t in scan.tracks if t.id == scan.main), None), tracking)


class RunningLabel:
    """The expression at time t: from the timeline windows covering t, else the nearest one, else the clip's."""

    def __init__(self, prediction):
        self.classes = list(prediction.classes)
        self.clip = np.asarray(prediction.probs, dtype=np.float64)
        timeline = prediction.timeline
        if timeline is None or not len(timeline):
            self.start = self.end = np.zeros(0)
            self.probs = np.zeros((0, len(self.classes)))
        else:
            self.start, self.end = np.asarray(timeline.start), np.asarray(timeline.end)
            self.probs = np.asarray(timeline.probabilities, dtype=np.float64)

    def at(self, t: float) -> tuple[str, float]:
        if not len(self.start):
            p = self.clip
        else:
            covering = (self.start <= t) & (t <= self.end)
            if covering.any():
                p = self.probs[covering].mean(0)
            else:
                p = self.probs[int(np.argmin(np.abs((self.start + self.end) / 2 - t)))]
        k = int(np.argmax(p))
        return self.classes[k], float(p[k])


@dataclasses.dataclass
class FaceMark:
    """One face to draw: its box (frame pixels), expression and probability, whether the box is held."""

    box: np.ndarray
    label: str
    probability: float
    held: bool = False
    colour: tuple = BOX_COLOUR


def draw(image: np.ndarray, box: Optional[np.ndarray], label: str, probability: float,
         held: bool = False) -> np.ndarray:
    """A copy of ``image`` (RGB) with one face box and ``label probability`` drawn (top-left without a face)."""
    faces = [] if box is None else [FaceMark(np.asarray(box), label, probability, held)]
    return draw_faces(image, faces, label, probability)


def draw_faces(image: np.ndarray, faces: list, label: str = "", probability: float = 0.0) -> np.ndarray:
    """A copy of ``image`` (RGB) with each face's box and ``label probability`` drawn in its colour; a held box
    (no detection on this frame) is dashed and its label says so. Without a face, ``label probability (no
    face)`` is written top-left."""
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    thickness = max(2, round(min(h, w) / 180))
    scale = max(0.5, min(h, w) / 600)
    weight = max(1, thickness // 2)

    def tag(text: str, tx: int, ty: int, colour) -> None:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
        cv2.rectangle(out, (tx, ty - th - 6), (tx + tw + 8, ty + base), colour, -1)
        cv2.putText(out, text, (tx + 4, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), weight, cv2.LINE_AA)

    for face in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        if face.held:
            _dashed_rectangle(out, (x0, y0), (x1, y1), face.colour, thickness)
        else:
            cv2.rectangle(out, (x0, y0), (x1, y1), face.colour, thickness)
        text = f"{face.label} {face.probability:.0%}" + (" (held)" if face.held else "")
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
        tx, ty = max(0, min(x0, w - tw - 8)), y0 - 6 if y0 - th - base - 8 >= 0 else min(h - base - 2, y1 + th + 8)
        tag(text, tx, ty, face.colour)
    if not faces:
        (_, th), _ = cv2.getTextSize("A", cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
        tag(f"{label} {probability:.0%} (no face)", 4, th + 8, NO_FACE_COLOUR)
    return out


def _dashed_rectangle(image: np.ndarray, p0: tuple, p1: tuple, colour, thickness: int) -> None:
    (x0, y0), (x1, y1) = p0, p1
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        for start in range(0, length, 2 * DASH):
            end = min(start + DASH, length)
            at = [tuple(round(u + (v - u) * k / max(length, 1)) for u, v in zip(a, b)) for k in (start, end)]
            cv2.line(image, at[0], at[1], colour, thickness)
