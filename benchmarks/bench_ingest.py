"""Ingestion time (decode + detect + crop) for a 10 s 720p clip and a 10-minute 720p clip, on CPU.

    python benchmarks/bench_ingest.py --out bench_ingest.json [--cache-dir DIR] [--repeats 5]

The clips are generated on first use (cached in --cache-dir): H.264 (x264, B-frames, a keyframe every
2 s), 1280x720, a real face (scikit-image's astronaut) moving over a panning background. Prints a
markdown table; writes the numbers, the machine's load and the versions as JSON to --out.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from media import astronaut_face, background, paste, write_video  # noqa: E402

from dferclip.files import write_json  # noqa: E402
from dferclip.video.decode import VideoReader, sample_indices  # noqa: E402
from dferclip.video.faces import MTCNNDetector  # noqa: E402
from dferclip.video.ingest import ingest  # noqa: E402

CLIPS = {  # name: (seconds, fps, x264 preset)
    "10s_720p": (10, 30, "veryfast"),
    "10min_720p": (600, 25, "superfast"),
}
WIDTH, HEIGHT = 1280, 720


def panning_face_frames(num_frames: int, fps: float):
    """A 720p scene: background panning 2 px per frame, the astronaut's face (about 175 x 220 px)
    moving on an ellipse, so every block of the picture moves as in real footage."""
    scene = background(WIDTH + 400, HEIGHT, seed=1)
    head, _ = astronaut_face(2.0)
    for t in range(num_frames):
        x = (2 * t) % 800
        x = x if x <= 400 else 800 - x
        frame = np.ascontiguousarray(scene[:, x : x + WIDTH])
        angle = 2 * np.pi * t / (4 * fps)
        fx = int(WIDTH / 2 - head.shape[1] / 2 + 200 * np.cos(angle))
        fy = int(HEIGHT / 2 - head.shape[0] / 2 + 60 * np.sin(angle))
        paste(frame, head, fx, fy)
        yield frame


def make_clip(cache: Path, name: str) -> Path:
    seconds, fps, preset = CLIPS[name]
    path = cache / f"{name}.mp4"
    if not path.exists():
        print(f"generating {path} ({seconds} s at {fps} fps) ...", file=sys.stderr, flush=True)
        partial = path.with_suffix(".part.mp4")
        write_video(partial, panning_face_frames(seconds * fps, fps), fps=fps, gop=2 * fps, options={"preset": preset})
        partial.rename(path)
    return path


def full_decode_seconds(path: Path, max_frames: int) -> tuple:
    """Time to decode the first ``max_frames`` frames in order (the cost ingestion avoids)."""
    import av

    start = time.perf_counter()
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            count += 1
            if count >= max_frames:
                break
    return time.perf_counter() - start, count


def timed_ingest(path: Path, detector) -> dict:
    """Ingestion timings plus the process CPU time (all threads) it used."""
    cpu = time.process_time()
    timings = ingest(path, detector=detector).timings
    return {**timings, "cpu_s": round(time.process_time() - cpu, 4)}


def bench_clip(path: Path, detector, repeats: int) -> dict:
    cold = ingest(path, detector=detector)
    runs = [timed_ingest(path, detector) for _ in range(repeats)]
    with VideoReader(path) as reader:
        reader.read(sample_indices(reader.num_frames, 16))
        decoded, total = reader.decoded_packets, reader.num_frames
    summary = {k: {"median": round(statistics.median(r[k] for r in runs), 4), "min": round(min(r[k] for r in runs), 4)} for k in runs[0]}
    return {
        "path": str(path),
        "source": cold.source.to_dict(),
        "status": cold.status,
        "cold_total_s": cold.timings["total_s"],
        "warm": summary,
        "runs": runs,
        "packets_decoded": decoded,
        "frames_in_clip": total,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--cache-dir", default=str(ROOT / ".cache" / "bench_ingest"), help="where the generated clips are kept")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for this process (0: torch's default); set once, never per call")
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    args = parser.parse_args(argv)

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    paths = {name: make_clip(cache, name) for name in args.clips}
    if args.threads:
        torch.set_num_threads(args.threads)
    detector = MTCNNDetector()
    load_before = os.getloadavg()
    results = {name: bench_clip(path, detector, args.repeats) for name, path in paths.items()}
    load_after = os.getloadavg()
    if "10s_720p" in paths:
        seconds, frames = full_decode_seconds(paths["10s_720p"], 10**9)
        results["10s_720p"]["full_decode_s"] = round(seconds, 4)
    if "10min_720p" in paths:
        seconds, frames = full_decode_seconds(paths["10min_720p"], 1500)
        results["10min_720p"]["full_decode_estimate_s"] = round(seconds * results["10min_720p"]["frames_in_clip"] / frames, 2)

    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in load_after],
        },
        "versions": _versions(),
        "detector": {"name": "MTCNN", "detect_side": detector.detect_side, "min_face": detector.min_face,
                     "torch_threads": torch.get_num_threads()},
        "targets_s": {"10s_720p": 0.5, "10min_720p": 2.0},
        "clips": results,
    }
    write_json(args.out, report)

    print("| clip | frames | decode s | detect s | crop s | total s (median) | total s (min) | CPU s | cold s | packets decoded | target s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        w = r["warm"]
        print(
            f"| {name} | {r['frames_in_clip']} | {w['decode_s']['median']:.3f} | {w['detect_s']['median']:.3f} | "
            f"{w['crop_s']['median']:.3f} | {w['total_s']['median']:.3f} | {w['total_s']['min']:.3f} | "
            f"{w['cpu_s']['median']:.3f} | {r['cold_total_s']:.3f} | {r['packets_decoded']} | {report['targets_s'][name]} |"
        )
    print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    print("decode and detect overlap (detection runs on decoded chunks while decoding goes on): they do not add up to total")


def _versions() -> dict:
    import av
    import torch

    return {"torch": torch.__version__, "av": av.__version__, "ffmpeg": str(av.ffmpeg_version_info)}


if __name__ == "__main__":
    main()
