"""explain: where (face regions) and when (frames) a clip matched a class or a text: heat maps over the face
crops the model saw and each frame's share, as a picture (.png) or arrays (.npz)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from .. import runtime
from ..errors import DferclipError


def add_arguments(p):
    p.add_argument("video", help="video file (mp4, webm, mov, ...)")
    p.add_argument("--text", default=None,
                   help='a description to explain, e.g. "raised cheeks" (with --class: as a descriptor of that '
                        "class, through its learned prompt; without: plain CLIP text features)")
    p.add_argument("--class", dest="class_name", default=None,
                   help="a class name or index (default: the predicted class, when no --text is given)")
    p.add_argument("--versus", default="auto",
                   help='what the explanation contrasts the target with: "auto" (the neutral class, or the other '
                        'classes when the target is neutral or there is none), "others", a class name, or "none" '
                        "for the target's raw logit")
    p.add_argument("--out", default=None, help="write the maps: a .png picture or a .npz of arrays")
    p.add_argument("--checkpoint", "--model", dest="checkpoint", default=None,
                   help="weights: official .pth, own folder, name in checkpoints/, Hub id, random[:config], "
                        "pretrained:config[:tag] (default: DFERCLIP_MODEL, then the app's model order)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON (maps rounded)")


def run(args) -> int:
    from ..explain import ExplainError, explain_clip, frames_as_images
    from ..video.ingest import ingest

    if args.out and Path(args.out).suffix.lower() not in (".png", ".npz"):
        raise ExplainError(f"--out must end in .png or .npz, got {args.out!r}")
    if args.device:
        os.environ["DFERCLIP_DEVICE"] = args.device
    model = runtime.ModelRegistry.discover(args.checkpoint, max_loaded=1).get()
    what, warning = runtime.weights_banner(model.weights_info)
    if warning:
        print(f"WARNING: {warning} ({what})", file=sys.stderr)
    cls = args.class_name
    if cls is not None and cls.isdigit():
        cls = int(cls)
    clip = ingest(args.video, model.input_config)
    versus = None if args.versus == "none" else int(args.versus) if args.versus.isdigit() else args.versus
    ex = explain_clip(model, clip.video, text=args.text, class_index=cls, versus=versus)
    if args.out:
        write_explanation(args.out, ex, frames_as_images(model, clip.video[0]), [f.time_s for f in clip.frames])
    if args.json:
        print(json.dumps(ex.to_dict(), indent=None))
        return 0
    contrast = "" if ex.versus is None else f" versus {ex.versus}: explained difference {ex.score:+.3f}"
    print(f"{Path(args.video).name}: {ex.target}, logit {ex.logit:.3f}{contrast} ({what})")
    print("frame  time(s)  share   occlusion drop")
    for k, (share, drop) in enumerate(zip(ex.frame_relevancy, ex.frame_occlusion)):
        print(f"{k:5d}  {clip.frames[k].time_s:7.2f}  {share:5.3f}  {drop:+8.3f}  {'#' * round(share * 60)}")
    if args.out:
        print(f"maps written to {args.out}")
    return 0


def write_explanation(path: str | Path, ex, images: list, times: list) -> Path:
    """``.npz``: the maps (one array per stream, T x H x W), frame relevancy and occlusion, the crops, times and
    score; ``.png``: per stream a row of heat maps over the crops, with the frame-importance strip below."""
    from ..files import atomic_write, atomic_write_with

    path = Path(path)
    if path.suffix.lower() == ".npz":
        arrays = {f"map_{k}": v for k, v in ex.maps.items()}
        arrays |= {"frame_relevancy": ex.frame_relevancy, "frame_occlusion": ex.frame_occlusion,
                   "crops": np.stack(images), "times": np.asarray(times, dtype=np.float64),
                   "score": np.float64(ex.score), "logit": np.float64(ex.logit), "target": np.str_(ex.target),
                   "versus": np.str_(ex.versus or "")}
        with atomic_write(path, "wb") as f:
            np.savez_compressed(f, **arrays)
        return path
    if path.suffix.lower() != ".png":
        raise DferclipError(f"cannot write {path.name}: use a .png or .npz file name")
    picture = explanation_picture(ex, images)
    atomic_write_with(path, lambda tmp: picture.save(tmp, format="PNG"))
    return path


def explanation_picture(ex, images: list, cell: int = 96):
    """One PIL image: a row of crops, a row of overlays per stream, the frame-importance strip."""
    from PIL import Image

    from ..explain import overlay, strip_image

    def row(arrays):
        return np.concatenate([np.asarray(Image.fromarray(a).resize((cell, cell), Image.BILINEAR)) for a in arrays], 1)

    rows = [row(images)] + [row([overlay(img, m) for img, m in zip(images, maps)]) for maps in ex.maps.values()]
    rows.append(strip_image(ex, cell=cell, height=cell // 2))
    return Image.fromarray(np.concatenate(rows, 0))
