"""predict: classify a video clip; prints class probabilities and what ingestion did (JSON with --json)."""
from __future__ import annotations

import json
import os
import sys

from .. import runtime


def add_arguments(p):
    p.add_argument("video", help="video file (mp4, webm, mov, ...)")
    p.add_argument("--checkpoint", "--model", "--weights", dest="checkpoint", default=None,
                   help="weights: a published name (dfew-fold1, ...; see `weights list`), official .pth, own folder, "
                        "name in checkpoints/, Hub id, random[:config], "
                        "pretrained:config[:tag] (default: DFERCLIP_MODEL, then the app's model order)")
    p.add_argument("--json", action="store_true", help="print one JSON object (probabilities, timeline, ingestion)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--no-timeline", action="store_true", help="skip the sliding-window timeline")


def run(args) -> int:
    from ..video.decode import check_input

    check_input(args.video)  # a bad path fails before the model loads
    from ..predict import predict_clip

    if args.device:
        os.environ["DFERCLIP_DEVICE"] = args.device
    registry = runtime.ModelRegistry.discover(args.checkpoint, max_loaded=1)
    model = registry.get()
    what, warning = runtime.weights_banner(model.weights_info)
    if warning:
        print(f"WARNING: {warning} ({what})", file=sys.stderr)
    pred = predict_clip(model, args.video, windows=not args.no_timeline, dev=registry.device)
    if args.json:
        print(json.dumps(pred.to_dict(), indent=2, default=str))
        return 0
    print_report(pred, what)
    return 0


def print_report(pred, weights: str) -> None:
    info = pred.ingest.source
    print(f"{info.path}: {pred.top}")
    for name, p in sorted(pred.probabilities.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<12} {p:6.3f}  {'#' * round(p * 40)}")
    n_face = sum(1 for f in pred.ingest.frames if f.box is not None)
    print(f"face: {'found' if pred.ingest.face_found else 'NOT found (centre crops)'} "
          f"in {n_face}/{len(pred.ingest.frames)} model frames")
    print(f"video: {info.duration_s} s, {info.num_frames} frames, {info.fps} fps, {info.width}x{info.height} "
          f"{info.codec}")
    if pred.timeline is not None:
        print(f"timeline: {len(pred.timeline)} windows")
    t = pred.timings
    print(f"time: ingestion {t['ingestion']:.2f} s, model {t['model']:.2f} s, total {t['total']:.2f} s "
          f"({pred.device} {pred.dtype})")
    print(f"weights: {weights}")
    for w in pred.warnings:
        print(f"warning: {w}", file=sys.stderr)
