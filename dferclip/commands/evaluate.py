"""evaluate: UAR, WAR, per-class recall and the confusion matrix of a model on a labelled set (5-fold means
with --folds)."""
from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

from ..files import write_json
from ..progress import progress_bar
from ..training.evaluate import evaluate_sources, parse_folds
from .common import add_annotation_list_arguments, parse_path_map


def add_arguments(p):
    p.add_argument("--checkpoint", required=True,
                   help="model: own folder, official .pth, Hub id, name in checkpoints/ (may hold {fold})")
    p.add_argument("--data", required=True,
                   help="annotation list <frame_dir> <num_frames> <label>, a <class>/<clip> folder tree, or "
                        "hf:<dataset>[@split] (may hold {fold})")
    p.add_argument("--folds", help="e.g. 1-5: evaluate each fold and report the mean (DFEW, MAFW)")
    p.add_argument("--output", help="write the results as JSON here (default: print only)")
    p.add_argument("--plot-dir", help="save confusion-matrix PNGs here (default: beside --output)")
    p.add_argument("--captions", help="FineCLIPER: caption file (dferclip.captions) or a folder of them for the "
                                      "caption stream; may hold {fold}")
    p.add_argument("--face-cache", help="FineCLIPER: keep each clip's face analysis in this folder (default: none)")
    p.add_argument("--descriptions", help="evaluate with this description set instead of the model's own")
    add_annotation_list_arguments(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--amp", action="store_true", help="mixed precision on GPU")


def run(args) -> int:
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    plot_dir = args.plot_dir or (str(Path(args.output).parent) if args.output else None)
    res = evaluate_sources(args.checkpoint, args.data, folds=parse_folds(args.folds), device=device,
                           batch_size=args.batch_size, workers=args.workers, amp=args.amp,
                           descriptions=args.descriptions, label_base=args.label_base, root=args.data_root,
                           path_map=parse_path_map(args.path_map), plot_dir=plot_dir,
                           progress=partial(progress_bar, desc="evaluating", unit="batch"),
                           captions=args.captions, face_cache=args.face_cache)
    rows = res["folds"] if "folds" in res else [res]
    for r in rows:
        tag = f"fold {r['fold']}: " if "fold" in r else ""
        print(f"{tag}UAR {r['uar']:.2f}  WAR {r['war']:.2f}  (n={r['n']}, {r['data']})")
        print("  recall: " + ", ".join(f"{c} {v:.1f}" if v is not None else f"{c} -" for c, v in r["recall"].items()))
        if r.get("captions", {}).get("without_caption"):
            c = r["captions"]
            print(f"  captions: {c['without_caption']} of {c['clips']} clips have none (caption stream off for them)")
    if "mean" in res:
        m = res["mean"]
        print(f"mean over {m['folds']} folds: UAR {m['uar']:.2f} ± {m['uar_std']:.2f}  WAR {m['war']:.2f} ± {m['war_std']:.2f}")
    if args.output:
        write_json(args.output, res)
        print(f"wrote {args.output}")
    elif not sys.stdout.isatty():
        print(json.dumps(res, indent=2))
    return 0
