"""Forward latency of one 16-frame clip (B=1, T=16, 224x224) for DFER-CLIP ViT-B/32 and ViT-B/16.

Random weights (no CLIP weights can be had offline): latency does not depend on the values. Class embeddings are
cached after the first call, as in the app, so the figure is the video side plus scoring; the text side
(re-encoding all class prompts) is reported separately. CPU fp32 always; on a GPU also fp16 and bf16.
Usage: python benchmarks/bench_model.py [--json out.json] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import dferclip  # noqa: E402
from benchmarks.common import machine, timeit, write_json  # noqa: E402

GFLOPS_PER_FRAME = {"dferclip-vit-b-32": 4.4, "dferclip-vit-b-16": 17.6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows = []
    devices = [("cpu", torch.float32)]
    if torch.cuda.is_available():
        devices += [("cuda", torch.float32), ("cuda", torch.float16), ("cuda", torch.bfloat16)]
    for name in ("dferclip-vit-b-32", "dferclip-vit-b-16"):
        model = dferclip.load_model(f"random:{name}")
        for device, dtype in devices:
            model = model.to(device=device, dtype=dtype)
            video = torch.rand(1, 16, 3, 224, 224, device=device, dtype=dtype)
            sync = torch.cuda.synchronize if device == "cuda" else None
            with torch.inference_mode():
                clip = timeit(lambda: model(video), repeat=args.repeat, sync=sync)
                text = timeit(lambda: model.encode_classes(), repeat=args.repeat, sync=sync)
            gflop = GFLOPS_PER_FRAME[name] * 16
            rows.append({"model": name, "device": device, "dtype": str(dtype).replace("torch.", ""),
                         "clip_s": clip["median_s"], "text_side_s": text["median_s"],
                         "gflops_per_s": gflop / clip["median_s"]})
    print(f"Machine: {machine()}\n")
    print("| model | device | dtype | 16-frame clip forward (median) | achieved GFLOP/s | all class prompts re-encoded |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['device']} | {r['dtype']} | {r['clip_s'] * 1000:.0f} ms | "
              f"{r['gflops_per_s']:.0f} | {r['text_side_s'] * 1000:.0f} ms |")
    write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
