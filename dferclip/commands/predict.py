"""predict: classify a video clip (probabilities and what ingestion did; JSON with --json), or a whole corpus
(a folder, a .csv list or hf:<dataset>) into one .jsonl/.csv line per clip with --output.

    python -m dferclip predict clip.mp4 [--json] [--annotate out.mp4]
    python -m dferclip predict clip.mp4 --faces all --json         # one entry per face track: span, boxes, label
    python -m dferclip predict clip.mp4 --models dfew-fold1,random:fineclipper-vit-b-16,emoclip-b32  # side by side
    python -m dferclip predict clips/ --output preds.jsonl          # resumable; a bad clip is a line, not a stop
    torchrun --nproc_per_node 4 -m dferclip predict list.csv --output preds.csv   # sharded, one merged output
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import DataError


BACKEND_CHOICES = ("eager", "compile", "openvino", "int8", "auto")  # dferclip.backends.CHOICES (checked by a test)


def add_arguments(p):
    p.add_argument("video", help="a video file (mp4, webm, mov, ...), or with --output a folder of videos, a .csv "
                                 "list (a 'path' column) or hf:<Hub id or save_to_disk folder>[@split]")
    p.add_argument("--checkpoint", "--model", "--weights", dest="checkpoint", default=None,
                   help="weights: a published name (dfew-fold1, ...; see `weights list`), official .pth, own folder, "
                        "name in checkpoints/, Hub id, random[:config], "
                        "pretrained:config[:tag] (default: DFERCLIP_MODEL, then the app's model order)")
    p.add_argument("--models", default=None, metavar="A,B,C",
                   help="one clip, several models side by side (comma-separated weights as --model); the clip is "
                        "decoded and its face found once for all of them")
    p.add_argument("--json", action="store_true", help="print one JSON object (probabilities, timeline, ingestion)")
    p.add_argument("--faces", choices=("main", "all"), default="main",
                   help="main: the clip's main face (default); all: every face track, each read over the span "
                        "where it is present (one decode and face search, one model pass per face); with "
                        "--output, one line per (clip, face)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--no-timeline", action="store_true", help="skip the sliding-window timeline")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                   help="image tower backend (default: DFERCLIP_BACKEND, else auto for a corpus and eager for one "
                        "clip, where converting the tower costs more than it saves); int8 is faster but lossy")
    p.add_argument("--annotate", metavar="OUT.mp4", default=None,
                   help="one clip: also write it with the face box and the running expression drawn (H.264 .mp4 "
                        "when this PyAV can encode it, else VP9 .webm)")
    corpus = p.add_argument_group("corpus (with --output)")
    corpus.add_argument("--output", "-o", default=None, help="preds.jsonl or preds.csv: one line per clip; clips "
                                                             "already in it are skipped")
    corpus.add_argument("--batch-size", type=int, default=None,
                        help="clips per model forward (default: as many as fill the frames per image-tower call that "
                             "run fastest on this machine, timed once on CPU and kept in the cache)")
    corpus.add_argument("--workers", type=int, default=2, help="decoding/face detection processes (default 2)")
    corpus.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.device:
        os.environ["DFERCLIP_DEVICE"] = args.device
    if args.output:
        if args.annotate:
            raise DataError("--annotate is for one clip; leave out --output")
        if args.models:
            raise DataError("--models is for one clip; leave out --output")
        return run_corpus(args)
    if args.models and args.faces == "all":
        raise DataError("--faces all reads every face with one model: leave out --models")
    if Path(args.video).is_dir() or args.video.startswith("hf:") or args.video.lower().endswith(".csv"):
        raise DataError(f"{args.video} is a corpus, not one clip: add --output preds.jsonl (or .csv)")
    from ..video.decode import check_input

    check_input(args.video)  # a bad path fails before torch and the model load
    from .. import runtime
    from ..predict import predict_clip

    backend = args.backend or os.environ.get("DFERCLIP_BACKEND") or "eager"
    if args.models:
        return run_models(args, backend)
    registry = runtime.ModelRegistry.discover(args.checkpoint, max_loaded=1, backend=backend, background=False)
    model = registry.get()
    what, warning = runtime.weights_banner(model.weights_info)
    if warning:
        print(f"WARNING: {warning} ({what})", file=sys.stderr)
    if args.faces == "all":
        return run_faces(args, model, registry, what)
    pred = predict_clip(model, args.video, windows=not args.no_timeline, dev=registry.device)
    annotated = None
    if args.annotate:
        from ..video.annotate import annotate_prediction

        annotated = annotate_prediction(pred, args.video, args.annotate)
    if args.json:
        out = pred.to_dict()
        if annotated is not None:
            out["annotated"] = {"path": str(annotated), "codec": _codec_of(annotated)}
        print(json.dumps(out, indent=2, default=str))
        return 0
    print_report(pred, what)
    if annotated is not None:
        print(f"annotated video: {annotated} ({_codec_of(annotated)})")
    return 0


def run_faces(args, model, registry, weights: str) -> int:
    """One clip, every face: one prediction per face track, the main face first."""
    from ..predict import predict_faces

    preds = predict_faces(model, args.video, windows=not args.no_timeline, dev=registry.device)
    annotated = None
    if args.annotate:
        from ..video.annotate import annotate_prediction

        annotated = annotate_prediction(preds, args.video, args.annotate)
    if args.json:
        out = {"clip": str(args.video), "faces": [p.to_dict() for p in preds]}
        if annotated is not None:
            out["annotated"] = {"path": str(annotated), "codec": _codec_of(annotated)}
        print(json.dumps(out, indent=2, default=str))
        return 0
    info = preds[0].ingest.source
    found = preds[0].ingest.faces
    print(f"{info.path}: {found} face{'s' if found != 1 else ''} tracked; decoded and searched for faces once")
    for pred in preds:
        ingest = pred.ingest
        if ingest.track_id is None:
            print("  no face: the model read the centre of the frames")
        else:
            span = f"{ingest.span_s[0]:.1f}–{ingest.span_s[1]:.1f} s"
            print(f"  face {ingest.track_id + 1}{' (main)' if ingest.main else ''}, {span}: {pred.top} "
                  f"{pred.probs.max():.0%}  " + ", ".join(f"{c} {p:.2f}" for c, p in sorted(
                      pred.probabilities.items(), key=lambda kv: -kv[1])[:3]))
    print(f"weights: {weights}")
    if annotated is not None:
        print(f"annotated video: {annotated} ({_codec_of(annotated)})")
    for w in dict.fromkeys(w for p in preds for w in p.warnings):
        print(f"warning: {w}", file=sys.stderr)
    return 0


def model_keys(text: str) -> list[str]:
    """The --models list: distinct, non-empty, at least two."""
    keys = list(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    if len(keys) < 2:
        raise DataError(f"--models needs two or more comma-separated models, got {text!r}")
    return keys


def run_models(args, backend: str) -> int:
    """One clip, several models: decoded and face-searched once, then each model's prediction."""
    from .. import runtime
    from ..predict import predict_models

    if args.annotate:
        raise DataError("--annotate draws one model's prediction: leave out --models")
    keys = model_keys(args.models)
    registry = runtime.ModelRegistry([runtime.ModelEntry(k, k, "explicit") for k in keys], max_loaded=len(keys),
                                     backend=backend, background=False)
    models = [registry.get(k) for k in keys]
    banners = [runtime.weights_banner(m.weights_info) for m in models]
    for key, (what, warning) in zip(keys, banners):
        if warning:
            print(f"WARNING: {key}: {warning} ({what})", file=sys.stderr)
    preds = predict_models(models, args.video, windows=not args.no_timeline, dev=registry.device)
    if args.json:
        print(json.dumps({"clip": str(args.video), "models": [
            {"model": k, "family": m.family, **p.to_dict()} for k, m, p in zip(keys, models, preds)]},
            indent=2, default=str))
        return 0
    print_side_by_side(keys, preds, [what for what, _ in banners])
    return 0


def print_side_by_side(keys: list[str], preds: list, weights: list[str]) -> None:
    """Each model's top class, then every class's probability under each model (a class a model lacks: -)."""
    info = preds[0].ingest.source
    print(f"{info.path}: {info.duration_s} s, {info.num_frames} frames; decoded and searched for a face once")
    for i, (key, pred) in enumerate(zip(keys, preds), start=1):
        n_face = sum(1 for f in pred.ingest.frames if f.box is not None)
        windows = "" if pred.timeline is None else f", timeline of {len(pred.timeline)} window" + (
            "s" if len(pred.timeline) != 1 else "")
        print(f"[{i}] {key}: {pred.top} (face in {n_face}/{len(pred.ingest.frames)} model frames{windows}; "
              f"model {pred.timings['model']:.2f} s)")
    classes = list(dict.fromkeys(c for p in preds for c in p.probabilities))
    print(f"  {'class':<12}" + "".join(f"{f'[{i}]':>8}" for i in range(1, len(keys) + 1)))
    for c in classes:
        cells = "".join(f"{p.probabilities[c]:8.3f}" if c in p.probabilities else f"{'-':>8}" for p in preds)
        print(f"  {c:<12}{cells}")
    for key, what in zip(keys, weights):
        print(f"weights of {key}: {what}")
    for key, pred in zip(keys, preds):
        for w in pred.warnings:
            print(f"warning ({key}): {w}", file=sys.stderr)


def _codec_of(path: Path) -> str:
    return "H.264 mp4" if path.suffix.lower() == ".mp4" else "VP9 webm"


def run_corpus(args) -> int:
    from ..corpus import Shard, list_clips, nothing_left

    shard = Shard.from_env()
    clips = list_clips(args.video)
    finished = nothing_left(clips, args.output) if shard.world == 1 else None
    if finished is not None:  # a resumed run with nothing to do answers before torch and the model load
        print(f"0 clips predicted, {finished.skipped} already in the output; {len(clips)} clips listed -> "
              f"{finished.output}", file=sys.stderr)
        return 0
    from .. import backends, runtime
    from ..corpus import predict_corpus, run_sharded, shard_device

    dev = shard_device(shard)
    registry = runtime.ModelRegistry.discover(args.checkpoint, dev=dev, max_loaded=1, backend="eager")
    if shard.world > 1:
        import torch

        torch.manual_seed(0)  # untrained (random) weights: the same in every process
    model = registry.get()
    what, warning = runtime.weights_banner(model.weights_info)
    if warning and shard.rank == 0:
        print(f"WARNING: {warning} ({what})", file=sys.stderr)
    backend = backends.requested_backend(args.backend)

    def accelerate():
        backends.accelerate(model, backend, dev=registry.device, dtype=registry.dtype)

    summary = run_sharded(lambda: predict_corpus(
        model, clips, args.output, shard=shard, batch_size=args.batch_size, workers=args.workers, faces=args.faces,
        dev=registry.device, dtype=registry.dtype, progress=not args.no_progress, accelerate=accelerate), shard)
    where = f"rank {shard.rank}: " if shard.world > 1 else ""
    print(f"{where}{summary.done} clips predicted ({summary.errors} errors, {summary.no_face} without a face), "
          f"{summary.skipped} already in the output; {summary.clips_per_s:.2f} clips/s on {registry.device} "
          f"({summary.backend}, {summary.clips_per_forward} clips a forward); {len(clips)} clips listed -> "
          f"{summary.output}", file=sys.stderr)
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
          f"({pred.device} {pred.dtype}, {pred.backend})")
    print(f"weights: {weights}")
    for w in pred.warnings:
        print(f"warning: {w}", file=sys.stderr)
