"""caption: FineCLIPER's fine-grained clip descriptions from a multimodal LLM, refined (label leaks removed) and
stored per clip in a caption file for ``train --captions`` / ``evaluate --captions``.

    python -m dferclip caption --data list.txt --output captions.json [--backend openai|video-llava]

Each clip's ``--frames`` frames spread evenly over the whole clip go to the model. Clips already in the file
are skipped (run again to resume); the file is written every ``--flush-every`` clips and on exit. Exit code:
0 all described or cached, 1 some clips failed (listed), 2 configuration errors (no key, server unreachable,
no GPU for Video-LLaVA, bad data).
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

from .common import add_annotation_list_arguments, parse_path_map


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def add_arguments(p):
    p.add_argument("--data", required=True,
                   help="annotation list <frame_dir> <num_frames> <label>, or a <class>/<clip> folder tree of frame "
                        "folders or videos")
    p.add_argument("--output", required=True, help="caption file to create or extend (JSON, dferclip.captions)")
    p.add_argument("--backend", choices=["openai", "video-llava"], default="openai",
                   help="openai: any OpenAI-compatible vision chat API (default); video-llava: the paper's "
                        "Video-LLaVA-7B on a local CUDA GPU")
    p.add_argument("--model", help="openai: model name (default $DFERCLIP_LLM_MODEL or gpt-4o-mini); video-llava: "
                                   "Hugging Face id (default LanguageBind/Video-LLaVA-7B-hf)")
    p.add_argument("--base-url", help="openai: server URL (default $OPENAI_BASE_URL or OpenAI); the key is read "
                                      "from $OPENAI_API_KEY")
    p.add_argument("--frames", type=_positive_int, default=8, help="frames per clip sent to the model, spread "
                                                                   "evenly over the whole clip (default 8)")
    p.add_argument("--image-size", type=_positive_int, default=336,
                   help="openai: longest side of each frame sent, in pixels (default 336)")
    p.add_argument("--overwrite", action="store_true", help="describe clips that already have a caption again")
    p.add_argument("--limit", type=_positive_int, help="only the first N clips of the data (a trial run)")
    p.add_argument("--extra-leak-words", default="",
                   help="comma-separated words the refinement also removes, e.g. calm,nervous")
    p.add_argument("--flush-every", type=_positive_int, default=10, help="write the file every N new captions")
    p.add_argument("--timeout", type=float, default=60.0, help="openai: seconds for one reply in all (retries included)")
    p.add_argument("--max-retries", type=int, default=2, help="openai: retries of a request that failed")
    p.add_argument("--device", default="cuda", help="video-llava: torch device (default cuda)")
    p.add_argument("--load-in-4bit", action="store_true", help="video-llava: 4-bit weights (needs bitsandbytes)")
    add_annotation_list_arguments(p)
    p.add_argument("--frames-cache",
                   help="video trees: folder of the frames extracted from the videos (default <data>/.dferclip-"
                        "frames, as evaluate uses). Captions of videos are keyed by the video file's content, so "
                        "train and evaluate find them whatever their own frame cache")
    p.add_argument("--ingest-size", type=_positive_int, default=224,
                   help="video trees: face-crop size of newly extracted frames (default 224)")


def open_clips(spec: str, *, label_base: int = 0, root=None, path_map=None, frames_cache=None,
               ingest_size: int = 224):
    """The clip dataset of a data spec, whatever its labels: an annotation list is read without a class count,
    and a folder tree's sub-folders all count as classes (labels play no part in captioning)."""
    from ..config import InputConfig
    from ..errors import DataError
    from ..training.data import load_annotation_dataset, open_dataset

    if spec.startswith("hf:"):
        raise DataError("hf: datasets cannot be captioned: their clips are dataset rows, not files, and captions "
                        "are keyed by the content of a clip's frame folder or video file; save the frames as "
                        "folders with an annotation list and caption that")
    input_config = InputConfig(image_size=ingest_size)
    p = Path(spec)
    if p.is_file():
        return load_annotation_dataset(p, input_config, num_classes=None, label_base=label_base, root=root,
                                       path_map=path_map)
    names = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")) if p.is_dir() else []
    if p.is_dir() and not names:
        raise DataError(f"{p}: no class folders (expected <class>/<clip folder>/<frames> or <class>/<videos>)")
    return open_dataset(spec, input_config, class_names=names, label_base=label_base, root=root,
                        path_map=path_map, cache_dir=frames_cache)


def load_clip_frames(frame_files, n: int) -> list[np.ndarray]:
    """``n`` frames spread evenly over the clip, decoded to RGB uint8 arrays."""
    from PIL import Image

    from ..training.captions import CaptionError, pick_frames

    out = []
    for f in pick_frames(frame_files, n):
        try:
            with Image.open(f) as im:
                out.append(np.asarray(im.convert("RGB")))
        except (OSError, ValueError) as e:
            raise CaptionError(f"cannot read frame {f}: {e}") from None
    return out


def _clip_items(records, n_frames: int, sources: dict, unreadable: list):
    """``(key, load_frames, source)`` per record for caption_clips; clips whose key cannot be computed are
    collected in ``unreadable`` as ``(path, message)``."""
    from ..errors import CaptionError, VideoError
    from ..video.clips import clip_key, list_frames

    for r in records:
        try:
            key = clip_key(r.path)
            files = r.frames if r.frames is not None else list_frames(r.path)
        except (CaptionError, VideoError, OSError) as e:
            unreadable.append((r.path, str(getattr(e, "message", e))))
            continue
        sources.setdefault(key, r.path)
        yield key, partial(load_clip_frames, files, n_frames), r.path


def make_captioner(args):
    from ..errors import LLMConfigError
    from ..text.llm import LLMSettings, make_client
    from ..training.captions import CaptionError, OpenAICaptioner, VideoLLaVACaptioner

    if args.backend == "video-llava":
        if args.base_url:
            raise CaptionError("--base-url is for --backend openai; Video-LLaVA runs locally")
        kw = {"model": args.model} if args.model else {}
        return VideoLLaVACaptioner(**kw, device=args.device, num_frames=args.frames, load_in_4bit=args.load_in_4bit)
    settings = LLMSettings.from_env(model=args.model, base_url=args.base_url, temperature=0.2,
                                    timeout=args.timeout, max_retries=max(0, args.max_retries))
    if not settings.api_key:
        raise LLMConfigError("no API key: set OPENAI_API_KEY (for a local server such as vLLM, Ollama or LM Studio "
                             "any non-empty value works), or use --backend video-llava on a GPU")
    return OpenAICaptioner(settings, make_client(settings), num_frames=args.frames, image_size=args.image_size)


def run(args) -> int:
    from ..errors import LLMConnectionError
    from ..progress import progress_bar
    from ..training.captions import CaptionStore, caption_clips

    captioner = make_captioner(args)
    store = CaptionStore(args.output)
    ds = open_clips(args.data, label_base=args.label_base, root=args.data_root,
                    path_map=parse_path_map(args.path_map), frames_cache=args.frames_cache,
                    ingest_size=args.ingest_size)
    records = ds.records[: args.limit] if args.limit else ds.records
    extra = [w.strip() for w in args.extra_leak_words.split(",") if w.strip()]
    print(f"captioning {len(records)} clips of {args.data} with {captioner.name} {captioner.model} "
          f"({args.frames} frames each) into {args.output}", file=sys.stderr)
    sources: dict = {}
    unreadable: list = []
    items = progress_bar(_clip_items(records, args.frames, sources, unreadable), desc="captioning",
                         total=len(records), unit="clip")
    try:
        report = caption_clips(items, captioner, store, overwrite=args.overwrite,
                               flush_every=args.flush_every, extra_leak_words=extra)
    except LLMConnectionError:  # every later clip would fail the same way
        print(f"stopped: {len(store)} captions saved in {args.output}; run again to go on", file=sys.stderr)
        raise
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(store)} captions saved in {args.output}; run again to go on", file=sys.stderr)
        return 130
    report.failed += unreadable
    print(report.summary())
    if report.failed:
        print("failed clips:")
        for key, message in report.failed:
            print(f"  {sources.get(key, key)}: {message}")
    emptied = [k for k in report.described if store.text(k) is None]
    if emptied:
        print(f"{len(emptied)} of the new captions named the emotion in every sentence and are empty after "
              f"refinement: those clips go without the caption stream (first: {sources.get(emptied[0])})")
    print(f"{args.output}: {len(store)} captions; use it with train/evaluate --captions {args.output}")
    return 1 if report.failed else 0
