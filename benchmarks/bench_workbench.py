"""Description workbench: time from an edited description to updated scores, against recomputing from scratch.

    python benchmarks/bench_workbench.py --out bench_workbench.json [--clips 200] [--scratch-clips 20]

Model: DFER-CLIP ViT-B/32 with random weights (timing does not depend on the weights). Clips: random video
tensors (1, 16, 3, 224, 224), i.e. model input after ingestion; decoding and face detection are not timed
(they happen once per clip and are cached with the embeddings). "Edit" = one class's description replaced by a
new text; the updated result is zero-shot + learned-prompt scores (current, previous and baseline, with deltas)
for one clip, or UAR/WAR/recall/confusion for both modes on the evaluation set. "From scratch" = both video
embeddings of every clip + every class embedding (both modes) + the same scores, with no cache. For the 200-clip
set the from-scratch time is measured on ``--scratch-clips`` clips and scaled linearly (stated in the output)
unless ``--scratch-clips`` equals ``--clips``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dferclip import load_model  # noqa: E402
from dferclip.metrics import compute_metrics  # noqa: E402
from dferclip.workbench import EmbeddedSet, Workbench  # noqa: E402


def edited(ds, cls: int, text: str):
    descs = [list(d) for d in ds.descriptions]
    descs[cls] = [text]
    return ds.with_descriptions(descs)


def from_scratch(model, videos, ds, labels=None):
    """No caches: embed every clip both ways, every class both ways, score (and metrics).
    Returns the clip embeddings (learned, zero-shot)."""
    with torch.no_grad():
        model.set_descriptions(ds)
        learned = torch.cat([F.normalize(model.encode_video(v), dim=-1) for v in videos])
        zero = torch.cat([model.zero_shot_video(v) for v in videos])
        logits = model.score(learned, model.encode_classes(ds)), model.score(zero, model.zero_shot_classes(ds))
    if labels is not None:
        [compute_metrics(labels, lg.argmax(-1).tolist(), ds.num_classes) for lg in logits]
    return learned, zero


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON results path")
    p.add_argument("--config", default="dferclip-vit-b-32")
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--scratch-clips", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(f"random:{args.config}")
    model.requires_grad_(False)
    base = model.descriptions
    n_scratch = min(args.scratch_clips, args.clips)
    videos = [torch.rand(1, model.input_config.num_frames, 3, model.input_config.image_size,
                         model.input_config.image_size) for _ in range(n_scratch)]
    labels = [i % base.num_classes for i in range(args.clips)]
    counter = iter(range(10_000))

    def next_edit():
        i = next(counter)
        return edited(wb.current, i % base.num_classes, f"a face with cue number {i}, tense lips and narrowed eyes.")

    # one clip ------------------------------------------------------------------------------------
    wb = Workbench(model, base)
    t0 = time.perf_counter()
    name = wb.add_clip(videos[0])
    wb.score_clips([name])
    first_clip = time.perf_counter() - t0

    def edit_one_clip():
        wb.edit(next_edit())
        wb.score_clips([name])

    edit_clip = timed(edit_one_clip, args.repeats)
    scratch_clip = timed(lambda: from_scratch(model, videos[:1], wb.current), max(2, args.repeats // 2))

    # evaluation set --------------------------------------------------------------------------------
    t0 = time.perf_counter()
    learned, zero = from_scratch(model, videos, wb.current, labels[:n_scratch])
    scratch_part = time.perf_counter() - t0
    scratch_set = scratch_part * args.clips / n_scratch
    # the other clips' embeddings: random unit vectors (an edit's cost does not depend on their values)
    extra = args.clips - n_scratch
    learned = torch.cat([learned, F.normalize(torch.randn(extra, learned.shape[1]), dim=-1)])
    zero = torch.cat([zero, F.normalize(torch.randn(extra, zero.shape[1]), dim=-1)])
    wb.set_evaluation_embeddings(EmbeddedSet([f"clip{i}" for i in range(args.clips)], torch.tensor(labels),
                                             learned, zero))
    wb.evaluate()

    def edit_eval():
        wb.edit(next_edit())
        wb.evaluate()

    edit_set = timed(edit_eval, args.repeats)

    med = statistics.median
    rows = [
        ("one clip: edit one class -> scores (both modes, deltas)", med(edit_clip), med(scratch_clip)),
        (f"{args.clips}-clip set: edit one class -> UAR/WAR/recall/confusion (both modes, deltas)",
         med(edit_set), scratch_set),
    ]
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "model": f"random:{args.config} (random weights)",
        "clips": "random video tensors (1, 16, 3, 224, 224); ingestion not timed",
        "first_clip_embed_and_score_s": first_clip,
        "set_embeddings": f"{n_scratch} clips embedded for real, {args.clips - n_scratch} random unit vectors",
        "edit_one_clip_s": edit_clip,
        "scratch_one_clip_s": scratch_clip,
        "edit_set_s": edit_set,
        "scratch_set_s": scratch_set,
        "scratch_set_measured_on_clips": n_scratch,
        "scratch_set_extrapolated": n_scratch < args.clips,
        "rows": [{"case": c, "edit_ms": e * 1000, "scratch_ms": s * 1000, "speedup": s / e} for c, e, s in rows],
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"Machine: {result['machine']}; model {result['model']}; {result['clips']}\n")
    print("| case | edit -> updated (median ms) | from scratch (ms) | speed-up |")
    print("|---|---:|---:|---:|")
    for c, e, s in rows:
        print(f"| {c} | {e * 1000:.0f} | {s * 1000:.0f} | {s / e:.0f}x |")
    if n_scratch < args.clips:
        print(f"\nFrom scratch for {args.clips} clips: measured on {n_scratch} clips "
              f"({scratch_part:.1f} s) and scaled linearly.")
    print(f"First clip (embed once + encode every description + score): {first_clip * 1000:.0f} ms.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
