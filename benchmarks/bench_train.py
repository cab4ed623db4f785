"""Training throughput (clips/s) and data-loading throughput (clips/s).

    python benchmarks/bench_train.py [--json out.json] [--vit-steps 2] [--vit-batch 4] [--gpu-batch 48]

- data loading: synthetic face-crop frame folders through ``ClipDataset`` (TSN sampling + the official
  DFEW augmentation), 0 and 2 DataLoader workers, at the tiny model's 64 px and at 224 px;
- training step (forward + backward + SGD with the official groups) on ready tensors: the tiny model, and
  the ViT-B/32 shape (random weights: no download) for a few steps at a small batch on CPU;
- on a GPU, when there is one: ViT-B/32 at batch 48 with AMP.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dferclip.config import InputConfig  # noqa: E402
from dferclip.files import write_json  # noqa: E402
from dferclip.training.data import load_annotation_dataset  # noqa: E402
from dferclip.training.synthetic import write_frame_dataset  # noqa: E402
from dferclip.training.train import (  # noqa: E402
    TrainConfig,
    build_for_training,
    make_optimizer,
    resolve_descriptions,
    trainable_groups,
)


def bench_loading(list_file: Path, image_size: int, workers: int, batches: int = 4, batch: int = 8) -> float:
    ds = load_annotation_dataset(list_file, InputConfig(num_frames=16, image_size=image_size), train=True,
                                 augment="dfew", num_classes=6)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    n, t0 = 0, None
    for i, (video, _) in enumerate(loader):
        if i == 0:
            t0 = time.perf_counter()  # skip worker start-up
            continue
        n += len(video)
        if i == batches:
            break
    return n / (time.perf_counter() - t0)


def bench_step(model_name: str, batch: int, steps: int, device: str, amp: bool = False) -> float:
    cfg = TrainConfig(model=model_name, init="random", num_frames=16)
    torch.manual_seed(0)
    model = build_for_training(cfg, resolve_descriptions(cfg)).to(device)
    opt = make_optimizer(cfg, trainable_groups(model))
    size = model.input_config.image_size
    video = torch.rand(batch, 16, 3, size, size, device=device)
    label = torch.randint(0, 7, (batch,), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else torch.autocast(device, enabled=False)

    def step():
        with autocast:
            logits = model(video)
        loss = F.cross_entropy(logits.float(), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--vit-steps", type=int, default=2)
    ap.add_argument("--vit-batch", type=int, default=4)
    ap.add_argument("--gpu-batch", type=int, default=48)
    args = ap.parse_args(argv)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, " \
              f"{torch.get_num_threads()} threads"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (64, 224):
            lst = write_frame_dataset(Path(tmp) / str(size), 8, seed=0, size=size, frames=(20, 40))
            for workers in (0, 2):
                rows.append({"what": f"data loading, {size} px, DFEW augmentation", "workers": workers,
                             "device": "cpu", "batch": 8, "clips_per_s": bench_loading(lst, size, workers)})
    rows.append({"what": "train step, dferclip-tiny, 16 frames", "device": "cpu", "batch": 24,
                 "clips_per_s": bench_step("dferclip-tiny", 24, 5, "cpu")})
    if args.vit_steps > 0:
        rows.append({"what": "train step, ViT-B/32 shape, 16 frames", "device": "cpu", "batch": args.vit_batch,
                     "clips_per_s": bench_step("dferclip-vit-b-32", args.vit_batch, args.vit_steps, "cpu")})
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
        machine += f"; GPU {gpu}"
        rows.append({"what": "train step, ViT-B/32, 16 frames, AMP bf16", "device": gpu, "batch": args.gpu_batch,
                     "clips_per_s": bench_step("dferclip-vit-b-32", args.gpu_batch, 10, "cuda", amp=True)})
    print(f"machine: {machine}\n")
    print("| what | device | batch | workers | clips/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['device']} | {r['batch']} | {r.get('workers', '-')} | {r['clips_per_s']:.2f} |")
    if args.json:
        write_json(args.json, {"machine": machine, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
