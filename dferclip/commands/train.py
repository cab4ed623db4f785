"""train: the official DFER-CLIP recipe by default; runs under torchrun for multi-GPU / multi-node."""
from __future__ import annotations

import json

from ..training.evaluate import parse_folds
from .common import add_path_map_argument, parse_path_map


def add_arguments(p):
    p.add_argument("--config", default="official",
                   help="training config: a name in dferclip/training/configs (official, fineclipper, synthetic-tiny) "
                        "or a JSON file")
    p.add_argument("--train", help="training data: annotation list, <class>/<clip> folder tree or hf:<name>")
    p.add_argument("--val", help="validation data (default: a stratified split of --train)")
    p.add_argument("--test", help="test data, evaluated with the selected model")
    p.add_argument("--folds", help="e.g. 1-5: one run per fold ({fold} in the data paths), fold means reported")
    p.add_argument("--dataset", help="augmentation preset: DFEW, FERV39K, MAFW, none")
    p.add_argument("--init", help="pretrained[:tag], random, or weights to fine-tune (official .pth, model folder)")
    p.add_argument("--selection", choices=["val", "test", "last"],
                   help="model selection: validation split (default), test split (official protocol), last epoch")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size (over all processes)")
    p.add_argument("--workers", type=int)
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--output", help="run folder (default runs/dferclip)")
    p.add_argument("--resume", help="continue from a run folder or its train_state.pt")
    p.add_argument("--replace", action="store_true",
                   help="start over in an --output folder that holds an earlier run: the earlier run is moved aside "
                        "to <output>.replaced-<time>, never deleted (without --resume or --replace such a folder "
                        "is refused)")
    p.add_argument("--captions", help="FineCLIPER: caption file (dferclip.captions) or a folder of them; may hold "
                                      "{fold}")
    p.add_argument("--face-cache", help="FineCLIPER: folder for the per-clip face-analysis cache "
                                        "(default <output>/../face-cache)")
    add_path_map_argument(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (JSON values), e.g. --set lr.temporal=0.005 --set amp=false")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args) -> int:
    from ..training.train import load_train_config, train

    cfg = load_train_config(args.config)
    overrides = list(args.set)
    for key in ("train", "val", "test", "dataset", "init", "selection", "epochs", "batch_size", "workers",
                "device", "output", "captions", "face_cache"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if args.folds:
        overrides.append(f"folds={json.dumps(parse_folds(args.folds))}")
    if args.path_map:
        overrides.append(f"path_map={json.dumps(parse_path_map(args.path_map))}")
    cfg = cfg.with_overrides(overrides)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    summary = train(cfg, resume=args.resume, replace=args.replace)
    rows = summary.get("folds", [summary])
    for r in rows:
        if "test" in r:
            tag = f"fold {r['fold']}: " if "fold" in r else ""
            print(f"{tag}test UAR {r['test']['uar']:.2f}  WAR {r['test']['war']:.2f}  ({r['output']})")
    if "mean" in summary:
        print(f"mean over {summary['mean']['folds']} folds: UAR {summary['mean']['uar']:.2f}  "
              f"WAR {summary['mean']['war']:.2f}")
    return 0
