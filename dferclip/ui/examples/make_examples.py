"""Generate the app's example clips: small, browser-playable VP9 WebM files with no copyrighted media.

The face is the astronaut portrait shipped with scikit-image (``skimage.data.astronaut()``: Eileen Collins,
NASA photograph, public domain). It drifts and zooms over a smooth synthetic background, so face detection
and tracking have something to do. ``no_face.webm`` is the background alone (the app must warn, not fail).

    python dferclip/ui/examples/make_examples.py   # writes dferclip/ui/examples/*.webm (about 100 kB in all)
"""
from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT, FPS = 320, 240, 15
HEAD = (10, 300, 20, 330)  # y0, y1, x0, x1 of the astronaut's head and shoulders in skimage's astronaut()


def smooth_background(t: float, seed: int = 3) -> np.ndarray:
    """A slowly shifting, face-free colour field."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    channels = []
    for base in (70, 95, 130):
        wave = np.zeros((HEIGHT, WIDTH), np.float32)
        for _ in range(3):
            fx, fy, phase = rng.uniform(0.3, 1.5, 2).tolist() + [rng.uniform(0, 6.3)]
            wave += np.sin(2 * np.pi * (fx * xx / WIDTH + fy * yy / HEIGHT) + phase + 0.6 * t)
        channels.append(base + 25 * wave)
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def astronaut_head() -> Image.Image:
    from skimage import data

    y0, y1, x0, x1 = HEAD
    return Image.fromarray(np.ascontiguousarray(data.astronaut()[y0:y1, x0:x1]))


def face_frames(seconds: float) -> list[np.ndarray]:
    head = astronaut_head()
    frames = []
    n = round(seconds * FPS)
    for i in range(n):
        t = i / FPS
        scale = 0.62 + 0.08 * np.sin(2 * np.pi * t / seconds)  # slow zoom in and out
        w, h = round(head.width * scale), round(head.height * scale)
        patch = np.asarray(head.resize((w, h), Image.BILINEAR))
        x = round((WIDTH - w) / 2 + 40 * np.sin(2 * np.pi * t / seconds))  # drift left and right
        y = max(0, round((HEIGHT - h) / 2 + 8 * np.sin(4 * np.pi * t / seconds)))
        frame = smooth_background(t)
        x0, y0 = max(x, 0), y
        x1, y1 = min(x + w, WIDTH), min(y + h, HEIGHT)
        frame[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]
        frames.append(frame)
    return frames


def background_frames(seconds: float) -> list[np.ndarray]:
    return [smooth_background(i / FPS) for i in range(round(seconds * FPS))]


def write_webm(frames: list[np.ndarray], path: Path) -> Path:
    """VP9 in WebM (plays in every current browser, needs no ffmpeg binary)."""
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx-vp9", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "36", "b": "0", "deadline": "good", "cpu-used": "4"}
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return path


EXAMPLES = {
    "astronaut_drift.webm": lambda: face_frames(4.0),
    "no_face.webm": lambda: background_frames(2.0),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: dferclip/ui/examples/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in EXAMPLES.items():
        path = write_webm(make(), args.out / name)
        print(f"{path} {path.stat().st_size / 1024:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
