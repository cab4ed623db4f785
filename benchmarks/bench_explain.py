"""Cost of an explanation (relevancy maps for one class over 16 frames, temporal relevancy and the occlusion
check) against one forward pass, ViT-B/32 at 224 px, random weights (latency does not depend on the values).

The target (issue 14): at most 3x a forward pass. Forward = the model's forward on one clip in inference mode
(class embeddings cached, as in the app). Runs are interleaved (forward, explain, forward, ...) so that a busy
machine slows both alike; medians are reported.
Usage: python benchmarks/bench_explain.py [--json out.json] [--repeat 5] [--model random:dferclip-vit-b-32]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import dferclip  # noqa: E402
from benchmarks.common import machine, write_json  # noqa: E402
from dferclip.explain import explain_clip  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--model", default="random:dferclip-vit-b-32")
    args = ap.parse_args()
    model = dferclip.load_model(args.model)
    model.requires_grad_(False)  # as the app's registry leaves it
    ic = model.input_config
    video = ic.normalize(torch.rand(1, ic.num_frames, 3, ic.image_size, ic.image_size))

    def forward():
        with torch.inference_mode():
            model(video)

    def explain(occlusion=True):
        explain_clip(model, video, class_index=0, occlusion=occlusion)

    forward(), explain()  # warm-up (hooks installed, class embeddings cached)
    runs = {"forward": [], "explain": [], "explain_no_occlusion": []}
    for _ in range(args.repeat):
        for name, fn in (("forward", forward), ("explain", explain),
                         ("explain_no_occlusion", lambda: explain(False))):
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = med["explain"] / med["forward"]
    print(f"Machine: {machine()}\n")
    print(f"{args.model}, {ic.num_frames} frames at {ic.image_size} px, CPU fp32, medians of {args.repeat} "
          "interleaved runs.\n")
    print("| what | median | vs forward |")
    print("|---|---|---|")
    print(f"| forward (inference mode) | {med['forward'] * 1000:.0f} ms | 1.00x |")
    print(f"| explain one class: maps + temporal relevancy + occlusion | {med['explain'] * 1000:.0f} ms | "
          f"{ratio:.2f}x |")
    print(f"| explain without the occlusion check | {med['explain_no_occlusion'] * 1000:.0f} ms | "
          f"{med['explain_no_occlusion'] / med['forward']:.2f}x |")
    print(f"\nTarget: at most 3x a forward pass: {'met' if ratio <= 3 else 'NOT met'}.")
    write_json(args.json, {"machine": machine(), "model": args.model, "median_s": med, "ratio": ratio,
                           "runs": runs})


if __name__ == "__main__":
    main()
