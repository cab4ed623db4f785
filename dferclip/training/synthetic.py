"""Synthetic expression clips: procedural cartoon faces whose mouth, brows and eyes move over time.

Each clip draws a random face (skin tone, size, position, in-plane rotation, a small yaw shift of the
features), a random background (colour gradient + texture), a lighting gradient and sensor noise; the head
drifts slightly from frame to frame and the eyes blink. An expression follows onset -> apex -> offset
dynamics with random timing and apex strength.

Two classes hold exactly the same kind of frames and differ only in temporal order: ``happiness`` (a smile
appears and stays: onset -> apex) and ``fading smile`` (that clip played backwards: apex -> offset). A model
that ignores frame order cannot tell them apart, so they exercise the temporal transformer.

Clips can be written as face-crop frame folders with an official-format annotation list, or as short
VP9 WebM videos in class folders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..text.descriptions import DescriptionSet
from .data import ClipRecord, write_annotation


@dataclass(frozen=True)
class Expression:
    """Apex targets of the facial parameters (0 = neutral face)."""

    smile: float = 0.0  # mouth-corner lift (+ up, - down)
    mouth_open: float = 0.0
    mouth_width: float = 0.0  # relative change
    brow_raise: float = 0.0
    brow_tilt: float = 0.0  # + inner ends up (sad), - inner ends down (angry)
    eye_open: float = 0.0  # relative change of the eye height
    dynamics: str = "onset-apex-offset"  # or "onset-apex", "apex-offset", "idle"


CLASSES: dict[str, tuple[Expression, str]] = {
    "neutral": (Expression(dynamics="idle"),
                "a relaxed face, a straight mouth, level eyebrows, and calm eyes."),
    "happiness": (Expression(smile=1.0, mouth_width=0.15, eye_open=-0.3, dynamics="onset-apex"),
                  "a smile that appears and stays: the mouth corners rise and the eyes narrow."),
    "sadness": (Expression(smile=-0.9, brow_tilt=1.0, eye_open=-0.15),
                "a downturned mouth and eyebrows raised at their inner ends."),
    "anger": (Expression(smile=-0.2, mouth_width=-0.25, brow_tilt=-1.0, brow_raise=-0.4, eye_open=-0.45),
              "eyebrows pulled down and together, narrowed eyes, and tight lips."),
    "surprise": (Expression(mouth_open=1.0, mouth_width=-0.2, brow_raise=1.0, eye_open=0.5),
                 "raised eyebrows, widened eyes, and an open mouth."),
    "fading smile": (Expression(smile=1.0, mouth_width=0.15, eye_open=-0.3, dynamics="apex-offset"),
                     "a smile that fades: the mouth corners fall back and the eyes relax."),
}
CLASS_NAMES = list(CLASSES)
TEMPORAL_PAIR = ("happiness", "fading smile")  # same frames, opposite order


# Where the moving parts can be, in face units (x right, y down, face radius 1; see render_face), over every
# expression's range: the mouth (corners lift or drop, lips part) and the brows (raise, tilt), without the eyes.
FACE_PARTS = {"mouth": (-0.45, 0.25, 0.45, 0.85), "brows": (-0.5, -0.74, 0.5, -0.22)}


def part_boxes(size: int) -> dict[str, tuple[int, int, int, int]]:
    """Pixel boxes (x0, y0, x1, y1), end-exclusive, of :data:`FACE_PARTS` in a ``size`` x ``size`` frame of a
    clip made with ``variation=0`` (centred, upright, frontal face of radius 0.42 x size)."""
    r = 0.42 * size
    return {name: (int(np.floor(size / 2 + r * x0)), int(np.floor(size / 2 + r * y0)),
                   int(np.ceil(size / 2 + r * x1)), int(np.ceil(size / 2 + r * y1)))
            for name, (x0, y0, x1, y1) in FACE_PARTS.items()}


def synthetic_descriptions(classes: Sequence[str] = CLASS_NAMES) -> DescriptionSet:
    return DescriptionSet(classes=list(classes), descriptions=[[CLASSES[c][1]] for c in classes],
                          name="synthetic-expressions", class_set="custom",
                          provenance={"source": "dferclip.synthetic"})


def intensity_curve(dynamics: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Expression intensity per frame in [0, 1]."""
    t = (np.arange(n) + 0.5) / n
    if dynamics == "idle":
        return np.zeros(n)
    if dynamics in ("onset-apex", "apex-offset"):
        start = rng.uniform(0.05, 0.35)
        rise = rng.uniform(0.2, 0.4)
        curve = np.clip((t - start) / rise, 0, 1)
        return curve[::-1].copy() if dynamics == "apex-offset" else curve
    start, rise, hold, fall = rng.uniform(0.0, 0.25), rng.uniform(0.12, 0.3), rng.uniform(0.15, 0.35), rng.uniform(0.12, 0.3)
    up = np.clip((t - start) / rise, 0, 1)
    down = np.clip(1 - (t - start - rise - hold) / fall, 0, 1)
    return np.minimum(up, down)


@dataclass
class _Look:
    size: int
    bg: tuple
    bg2: tuple
    bg_angle: float
    skin: tuple
    feature: tuple
    center: tuple
    radius: float
    roll: float
    yaw: float
    light_angle: float
    light: float
    noise: float
    texture: np.ndarray
    canvas: Optional[Image.Image] = None  # the background, drawn once per clip


def _random_look(rng: np.random.Generator, size: int, variation: float) -> _Look:
    skin_base = np.array([rng.uniform(120, 240), rng.uniform(80, 200), rng.uniform(60, 170)])
    skin = tuple(int(v) for v in np.sort(skin_base)[::-1])  # r >= g >= b: plausible skin tones
    return _Look(
        size=size,
        bg=tuple(int(v) for v in rng.integers(0, 256, 3)),
        bg2=tuple(int(v) for v in rng.integers(0, 256, 3)),
        bg_angle=float(rng.uniform(0, 2 * math.pi)),
        skin=skin,
        feature=tuple(int(v) for v in rng.integers(10, 70, 3)),
        center=(0.5 + variation * float(rng.uniform(-0.1, 0.1)), 0.5 + variation * float(rng.uniform(-0.08, 0.08))),
        radius=0.42 + variation * float(rng.uniform(-0.06, 0.04)),
        roll=variation * float(rng.uniform(-15, 15)),
        yaw=variation * float(rng.uniform(-0.12, 0.12)),
        light_angle=float(rng.uniform(0, 2 * math.pi)),
        light=variation * float(rng.uniform(0.0, 0.35)),
        noise=variation * float(rng.uniform(2, 10)),
        texture=variation * rng.normal(0, 1, (size // 4 + 1, size // 4 + 1)),
    )


def _background(look: _Look) -> np.ndarray:
    s = look.size
    yy, xx = np.mgrid[0:s, 0:s] / s
    g = (np.cos(look.bg_angle) * xx + np.sin(look.bg_angle) * yy)
    g = (g - g.min()) / max(np.ptp(g), 1e-6)
    img = (1 - g[..., None]) * np.array(look.bg) + g[..., None] * np.array(look.bg2)
    tex = np.asarray(Image.fromarray(look.texture.astype(np.float32)).resize((s, s), Image.BILINEAR))
    return np.clip(img + 12 * tex[..., None], 0, 255)


def render_face(look: _Look, e: dict, blink: float, drift: tuple, rng: np.random.Generator) -> Image.Image:
    """One frame. ``e`` holds the current facial parameters (see :class:`Expression`)."""
    ss = 3  # supersampling
    s = look.size * ss
    if look.canvas is None:
        look.canvas = Image.fromarray(_background(look).astype(np.uint8)).resize((s, s), Image.NEAREST)
    canvas = look.canvas.copy()
    draw = ImageDraw.Draw(canvas)
    cx, cy = (look.center[0] + drift[0]) * s, (look.center[1] + drift[1]) * s
    r = look.radius * s
    rot = math.radians(look.roll + drift[2])
    cos, sin = math.cos(rot), math.sin(rot)

    def P(x, y):  # face units (x right, y down, face radius 1) -> pixels
        x = x + look.yaw
        return (cx + r * (x * cos - y * sin), cy + r * (x * sin + y * cos))

    def poly(points, **kw):
        draw.polygon([P(x, y) for x, y in points], **kw)

    def line(points, width):
        draw.line([P(x, y) for x, y in points], fill=look.feature, width=max(1, int(width * r)), joint="curve")

    face = [(0.82 * math.cos(a) - look.yaw, 1.0 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 48)]
    poly(face, fill=look.skin)
    # eyes: ellipses whose height follows openness and blinks
    eye_h = 0.11 * max(0.05, (1 + e["eye_open"]) * (1 - blink))
    for side in (-1, 1):
        ex, ey = 0.32 * side, -0.18
        pts = [(ex + 0.15 * math.cos(a), ey + eye_h * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 20)]
        poly(pts, fill=(245, 245, 245))
        iris = min(0.075, eye_h)
        poly([(ex + 0.075 * math.cos(a), ey + iris * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 16)],
             fill=look.feature)
        # brows: raise moves both ends, tilt moves the inner end
        by = -0.42 - 0.16 * e["brow_raise"]
        inner, outer = (ex - 0.17 * side, by - 0.13 * e["brow_tilt"]), (ex + 0.17 * side, by + 0.04 * e["brow_tilt"])
        line([inner, ((inner[0] + outer[0]) / 2, min(inner[1], outer[1]) - 0.03), outer], 0.07)
    # nose
    line([(0.0, -0.1), (-0.05, 0.15), (0.04, 0.17)], 0.035)
    # mouth: corners lift with smile, the lips part with mouth_open
    mw = 0.36 * (1 + e["mouth_width"])
    my = 0.5
    corner = my - 0.22 * e["smile"]
    mid_dip = 0.08 * e["smile"]
    top = [(x, corner + (my - corner) * (1 - (x / mw) ** 2) + mid_dip * (1 - (x / mw) ** 2) * 0.3)
           for x in np.linspace(-mw, mw, 15)]
    opening = 0.3 * e["mouth_open"]
    if opening > 0.02:
        bottom = [(x, y + opening * (1 - (x / mw) ** 2)) for x, y in top[::-1]]
        poly(top + bottom, fill=(90, 20, 30), outline=look.feature)
    else:
        line(top, 0.07)
    img = canvas.resize((look.size, look.size), Image.BOX)
    arr = np.asarray(img, dtype=np.float32)
    yy, xx = np.mgrid[0:look.size, 0:look.size] / look.size - 0.5
    shade = 1 + look.light * (np.cos(look.light_angle) * xx + np.sin(look.light_angle) * yy) * 2
    arr = arr * shade[..., None] + rng.normal(0, look.noise, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def generate_clip(label: int | str, rng: np.random.Generator, num_frames: int = 24, size: int = 64,
                  classes: Sequence[str] = CLASS_NAMES, variation: float = 1.0) -> list[Image.Image]:
    """One clip of class ``label`` (an index into ``classes`` or a name) as RGB frames; ``variation``
    scales the random head position, size, pose, background texture, lighting and noise (0: centred
    frontal faces on flat backgrounds)."""
    return generate_clip_with_intensity(label, rng, num_frames, size, classes, variation)[0]


def generate_clip_with_intensity(label: int | str, rng: np.random.Generator, num_frames: int = 24, size: int = 64,
                                 classes: Sequence[str] = CLASS_NAMES, variation: float = 1.0,
                                 expressions: Optional[Mapping[str, Expression]] = None
                                 ) -> tuple[list[Image.Image], np.ndarray]:
    """:func:`generate_clip` and the expression's intensity in each frame (num_frames,), in [0, 1].
    ``expressions``: class name -> :class:`Expression` for classes of one's own (default: :data:`CLASSES`)."""
    name = classes[label] if isinstance(label, (int, np.integer)) else label
    expr = expressions[name] if expressions is not None else CLASSES[name][0]
    reverse = expr.dynamics == "apex-offset"  # the reverse of an onset-apex clip, frame for frame
    dynamics = "onset-apex" if reverse else expr.dynamics
    look = _random_look(rng, size, variation)
    curve = intensity_curve(dynamics, num_frames, rng) * rng.uniform(0.75, 1.0)
    blinks = np.zeros(num_frames)
    for start in rng.integers(0, num_frames, size=int(rng.integers(0, 3))):
        blinks[start:start + 2] = [1.0, 0.5][: len(blinks[start:start + 2])]
    walk = np.cumsum(rng.normal(0, 1, (num_frames, 3)) * [0.004, 0.004, 0.6], axis=0) * variation
    idle = rng.normal(0, 0.05, 6)  # a neutral face is never perfectly neutral
    frames = []
    for k in range(num_frames):
        e = {f: getattr(expr, f) * curve[k] + idle[i] for i, f in enumerate(
            ("smile", "mouth_open", "mouth_width", "brow_raise", "brow_tilt", "eye_open"))}
        e["mouth_open"] = max(0.0, e["mouth_open"])
        frames.append(render_face(look, e, float(blinks[k]), tuple(walk[k]), rng))
    return (frames[::-1], curve[::-1].copy()) if reverse else (frames, curve)


def _clip_plan(n_per_class: int, classes: Sequence[str], seed: int, frames: tuple[int, int]):
    rng = np.random.default_rng(seed)
    plan = [(c, int(rng.integers(frames[0], frames[1] + 1))) for c in range(len(classes)) for _ in range(n_per_class)]
    order = rng.permutation(len(plan))
    return [(i, plan[j][0], plan[j][1]) for i, j in enumerate(order)]


def write_frame_dataset(out_dir: str | Path, n_per_class: int, *, seed: int = 0, size: int = 64,
                        frames: tuple[int, int] = (12, 32), classes: Sequence[str] = CLASS_NAMES,
                        list_name: str = "annotation.txt", image_format: str = "jpg", variation: float = 1.0) -> Path:
    """Clips as frame folders ``out_dir/<clip id>/00001.jpg`` + an official-format list; returns the list."""
    out_dir = Path(out_dir)
    records = []
    for i, label, n in _clip_plan(n_per_class, classes, seed, frames):
        folder = out_dir / f"{seed:04d}-{i:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, im in enumerate(generate_clip(label, np.random.default_rng([seed, i]), n, size, classes, variation), 1):
            im.save(folder / f"{k:05d}.{image_format}", quality=92)
        records.append(ClipRecord(str(folder), n, label))
    return write_annotation(records, out_dir / list_name)


def write_video_dataset(out_dir: str | Path, n_per_class: int, *, seed: int = 0, size: int = 128,
                        frames: tuple[int, int] = (12, 32), fps: int = 12, classes: Sequence[str] = CLASS_NAMES,
                        variation: float = 1.0) -> list[tuple[Path, int]]:
    """Clips as VP9 WebM files in class folders ``out_dir/<class>/<id>.webm``; returns (path, label) pairs."""
    import av

    out_dir = Path(out_dir)
    written = []
    for i, label, n in _clip_plan(n_per_class, classes, seed, frames):
        folder = out_dir / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{seed:04d}-{i:05d}.webm"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libvpx-vp9", rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "30", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
            for im in generate_clip(label, np.random.default_rng([seed, i]), n, size, classes, variation):
                container.mux(stream.encode(av.VideoFrame.from_image(im)))
            container.mux(stream.encode())
        written.append((path, label))
    return written

