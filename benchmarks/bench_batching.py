"""Frames per image-tower call on CPU: what a clip costs at 1, 2, 4 and 8 clips a call, and what the size the
chooser picks (dferclip.backends.frame_batch) saves against one clip a call.

DFER-CLIP ViT-B/32 at real size, random weights, 16 random frames a clip; torch eager and OpenVINO (when
installed), timed in interleaved rounds after a warm-up. For each size it also counts the minor page faults and
the kernel (system) CPU time a frame, from getrusage: the cost of allocations that glibc serves with fresh pages
(those above its mmap threshold, at most 32 MB). ``--malloc-keep`` repeats the eager rows in a child process whose
glibc keeps freed memory for reuse (MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 1 GiB), to show what the
faults cost. Then the chooser itself runs (timed) and the picked size is compared with one clip a call.

Usage: python benchmarks/bench_batching.py [--rounds 3] [--clips 1,2,4,8] [--malloc-keep] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import dferclip  # noqa: E402
from benchmarks.common import machine, write_json  # noqa: E402
from dferclip import backends  # noqa: E402

KEEP_FREED = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def _usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_stime


def time_sizes(runs: dict, frames: torch.Tensor, clips: list[int], rounds: int, T: int) -> list[dict]:
    """ms a clip, minor faults a frame and system CPU ms a frame of each run at each clip count: medians of
    interleaved rounds after a warm-up round."""
    got = {(name, c): {"ms": [], "faults": [], "sys_ms": []} for name in runs for c in clips}
    with torch.inference_mode():
        for k in range(rounds + 1):
            for c in clips:
                for name, run in runs.items():
                    x = frames[: c * T]
                    f0, s0 = _usage()
                    t0 = time.perf_counter()
                    run(x)
                    wall = time.perf_counter() - t0
                    f1, s1 = _usage()
                    if k:
                        got[name, c]["ms"].append(wall * 1000 / c)
                        got[name, c]["faults"].append((f1 - f0) / (c * T))
                        got[name, c]["sys_ms"].append((s1 - s0) * 1000 / (c * T))
    return [{"backend": name, "clips": c, "frames": c * T, **{k: statistics.median(v) for k, v in m.items()},
             "runs_ms": [round(v) for v in m["ms"]]} for (name, c), m in got.items()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clips", default="1,2,4,8")
    ap.add_argument("--eager-only", action="store_true")
    ap.add_argument("--malloc-keep", action="store_true", help="also time eager with glibc keeping freed memory")
    ap.add_argument("--json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    torch.manual_seed(0)
    model = dferclip.load_model("random:dferclip-vit-b-32")
    cfg = model.input_config
    T = cfg.num_frames
    clips = [int(c) for c in args.clips.split(",")]
    frames = cfg.normalize(torch.rand(max(clips) * T, 3, cfg.image_size, cfg.image_size,
                                      generator=torch.Generator().manual_seed(0)))
    runs = {"eager": model.frame_features}
    if not args.eager_only and "openvino" in backends.installed():
        info = backends.accelerate(model, "openvino")
        if info.name == "openvino":
            runs["openvino"] = backends.frame_function(model)
    rows = time_sizes(runs, frames, clips, args.rounds, T)
    result = {"machine": machine(), "rows": rows, "load": [load_before]}
    if args.eager_only:
        result["load"].append(os.getloadavg())
        write_json(args.json, result)
        return
    if args.malloc_keep:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "keep.json"
            cmd = [sys.executable, __file__, "--eager-only", "--rounds", str(args.rounds), "--clips", args.clips,
                   "--json", str(out)]
            subprocess.run(cmd, env={**os.environ, **KEEP_FREED}, check=True, capture_output=True)
            for r in json.loads(out.read_text())["rows"]:
                rows.append({**r, "backend": "eager, glibc keeps freed memory"})

    # the chooser as the corpus runs it (a cache of its own, so it times now), then the picked size vs 1 clip
    picks = {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DFERCLIP_CACHE"] = cache
        for name, run in runs.items():
            t0 = time.perf_counter()
            per_frame = backends.measure_frame_batches(model, {name: run})[name]
            picks[name] = {"frames": backends.fastest(per_frame), "chooser_s": time.perf_counter() - t0,
                           "ms_per_frame": {n: s * 1000 for n, s in per_frame.items()}}
    load_after = os.getloadavg()

    print(f"Machine: {machine()}; load average before/after {load_before[0]:.2f} / {load_after[0]:.2f} on "
          f"{os.cpu_count()} CPUs\n")
    print(f"Image tower of ViT-B/32 (random weights), 16 random frames a clip, median of {args.rounds} interleaved "
          "rounds after a warm-up; faults and system time a frame from getrusage.\n")
    print("| backend | clips a call | frames a call | ms a clip | vs 1 clip a call | minor faults a frame | "
          "system CPU ms a frame | runs (ms a clip) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    one = {r["backend"]: r["ms"] for r in rows if r["clips"] == 1}
    for r in rows:
        print(f"| {r['backend']} | {r['clips']} | {r['frames']} | {r['ms']:.0f} | {one[r['backend']] / r['ms']:.2f}x | "
              f"{r['faults']:.0f} | {r['sys_ms']:.1f} | {', '.join(map(str, r['runs_ms']))} |")
    print("\nThe chooser (`backends.measure_frame_batches`, as `predict_corpus` runs it where nothing is kept), "
          f"sizes {', '.join(map(str, backends.frame_batch_sizes(T)))} frames:\n")
    print("| backend | picked frames a call | chooser s | ms a frame at each size | picked vs 16 frames a call |")
    print("|---|---:|---:|---|---:|")
    for name, p in picks.items():
        sizes = ", ".join(f"{n}: {ms:.1f}" for n, ms in p["ms_per_frame"].items())
        gain = p["ms_per_frame"][T] / p["ms_per_frame"][p["frames"]]
        print(f"| {name} | {p['frames']} | {p['chooser_s']:.1f} | {sizes} | {gain:.2f}x |")
    result |= {"picks": picks, "load": [load_before, load_after]}
    write_json(args.json, result)


if __name__ == "__main__":
    main()
