"""FineCLIPER against DFER-CLIP on the same machine: forward latency per clip and training throughput.

Random weights (latency does not depend on the values). Forward: one clip (B=1), class embeddings cached as in
the app; FineCLIPER's parsing/landmark renders and caption tokens are given precomputed (the renders' own cost,
MediaPipe on the clip's frames, is reported on its own row). Training: one optimiser step (forward, loss,
backward, step) on a batch, reported as clips per second; DFER-CLIP trains its image encoder, FineCLIPER only
its adapters, temporal transformer and fusion weights. The text side (class prompts) is re-encoded in every
training step for both families.
Usage: python benchmarks/bench_fineclipper.py [--sizes tiny,b16] [--json out.json] [--repeat 3]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import dferclip  # noqa: E402
from benchmarks.common import machine, timeit, write_json  # noqa: E402
from dferclip.models.fineclipper import caption_inputs, fineclipper_config  # noqa: E402

SIZES = {  # name: (DFER-CLIP config, FineCLIPER base config, frames, training batch)
    "tiny": ("dferclip-tiny", "fineclipper-tiny", 8, 8),
    "b16": ("dferclip-vit-b-16", "fineclipper-vit-b-16", 16, 2),
}
CAPTION = "The mouth opens slightly and the eyebrows rise; the gaze moves down and the breathing slows."


def models(size: str):
    dfer_cfg, fine_cfg, frames, _ = SIZES[size]
    cfg = dferclip.get_config(dfer_cfg)
    yield "DFER-CLIP", dferclip.build_model(cfg.replace(input=dataclasses.replace(cfg.input, num_frames=frames)))
    for variant in ("base", "full"):
        fc = fineclipper_config(variant, base=fine_cfg)
        fc = fc.replace(input=dataclasses.replace(fc.input, num_frames=frames))
        yield f"FineCLIPER {variant}", dferclip.build_model(fc)


def inputs_for(model, batch: int, frames: int):
    s = model.input_config.image_size
    video = torch.rand(batch, frames, 3, s, s)
    if getattr(model, "family", "") != "fineclipper" or model.streams == ("video",):
        return video
    return {"video": video, "landmarks": torch.rand_like(video), "parsing": torch.rand_like(video)} | \
        caption_inputs([CAPTION] * batch, batch)


def train_step(model, inputs, labels):
    groups = model.param_groups()
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for g in groups.values() for p in g]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, 1e-4)
    model.train()

    def step():
        logits = model(inputs)
        loss = model.loss(logits, labels) if hasattr(model, "loss") else F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in params)


def mediapipe_row(frames: int, image_size: int, repeat: int):
    try:
        from dferclip.video.face_analysis import MediaPipeFaceAnalyzer, render_analysis
        from tests.media import astronaut_face
    except ImportError as e:
        return {"model": "MediaPipe renders", "note": f"skipped: {e}"}
    from PIL import Image

    face = np.asarray(Image.fromarray(astronaut_face()[0]).resize((image_size, image_size)))
    clip = [face] * frames
    analyzer = MediaPipeFaceAnalyzer()

    def run():
        render_analysis(clip, analyzer.analyze(clip))

    return {"model": "MediaPipe renders", "forward_ms": 1000 * timeit(run, repeat)["median_s"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="tiny,b16")
    ap.add_argument("--json")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for size in args.sizes.split(","):
        _, _, frames, batch = SIZES[size]
        for name, model in models(size):
            model.eval()
            one = inputs_for(model, 1, frames)
            with torch.inference_mode():
                fwd = timeit(lambda: model(one), args.repeat)
            step, trainable = train_step(model, inputs_for(model, batch, frames),
                                         torch.randint(0, model.num_classes, (batch,)))
            tr = timeit(step, args.repeat)
            rows.append({"size": size, "model": name, "frames": frames, "forward_ms": 1000 * fwd["median_s"],
                         "train_batch": batch, "train_clips_per_s": batch / tr["median_s"],
                         "trainable_params": trainable})
            print(rows[-1], file=sys.stderr, flush=True)
        rows.append({"size": size, "frames": frames} | mediapipe_row(frames, 224 if size == "b16" else 64,
                                                                      args.repeat))
    result = {"machine": machine(), "rows": rows}
    write_json(args.json, result)
    print(f"\n{result['machine']}\n")
    print("| size | model | frames | forward per clip (ms) | training (clips/s) | trainable params |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        train = f"{r['train_clips_per_s']:.2f} (batch {r['train_batch']})" if "train_clips_per_s" in r else "-"
        fwd = f"{r['forward_ms']:.0f}" if "forward_ms" in r else r.get("note", "-")
        params = f"{r['trainable_params'] / 1e6:.2f} M" if "trainable_params" in r else "-"
        print(f"| {r['size']} | {r['model']} | {r['frames']} | {fwd} | {train} | {params} |")


if __name__ == "__main__":
    main()
