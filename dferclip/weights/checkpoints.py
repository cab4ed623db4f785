"""One entry point, ``load_model``: a source string to a ready model.

Sources ``load_model`` accepts:
- an official DFER-CLIP checkpoint (``.pth``/``.pt``), or an EmoCLIP one in any layout its code writes, read
  safely (:mod:`dferclip.weights.formats`);
- the project's own format: a folder (or its ``model.safetensors``) with ``config.json`` beside it;
- the name of a folder or file in ``checkpoints/``;
- a Hugging Face Hub repo id (``org/name``) holding the project's format;
- ``random`` / ``random:<config>``: the offline default, untrained (predictions are meaningless);
- ``pretrained:<config>[:<tag>]``: CLIP towers from open_clip pretrained weights (zero-shot start);
- a published name (``dfew-fold1``, ``mafw-fold3``, ...; see ``dferclip.weights.published``): fetched, verified
  and converted once (:mod:`dferclip.weights.fetch`), then served from the cache.

Reading and writing the formats lives a level down, in :mod:`dferclip.weights.formats`; its public functions
are re-exported here, so ``from dferclip.weights.checkpoints import save_model`` keeps working.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from ..config import get_config
from ..errors import CheckpointError
from ..files import checkpoints_dir
from ..models import build_model
from ..text.descriptions import official_descriptions
from . import fetch, hub, published
from .fetch import ensure_cached
from .formats import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    convert,
    load_official,
    load_own,
    read_official,
    save_model,
)
from .published import PublishedWeights

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "dferclip-vit-b-32"
UNTRAINED_WARNING = "untrained weights: predictions are meaningless"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _random(config_name: str, descriptions) -> nn.Module:
    model = build_model(get_config(config_name), descriptions, num_classes=7)
    model.weights_info = {"kind": "random", "trained": False, "source": f"random:{config_name}",
                          "warning": UNTRAINED_WARNING}
    family = {"dferclip": "DFER-CLIP", "fineclipper": "FineCLIPER", "emoclip": "EmoCLIP"}.get(model.family, "model")
    log.warning("%s model %s has random, %s", family, config_name, UNTRAINED_WARNING)
    return model


def resolve_source(source: str | Path) -> str | Path:
    """A name in checkpoints/ -> its path; anything else unchanged."""
    if isinstance(source, str) and not Path(source).exists():
        local = checkpoints_dir() / source
        if local.exists():
            return local
    return source


def load_model(source: str | Path | None = None, device: str | torch.device = "cpu", *, descriptions=None,
               dtype: torch.dtype | None = None) -> nn.Module:
    """A ready model in eval mode. ``model.weights_info`` says what its weights are."""
    if source is None:
        source = "random"
    source = resolve_source(source)
    p = Path(source)
    s = str(source)
    if s == "random" or s.startswith("random:"):
        model = _random(s.partition(":")[2] or DEFAULT_CONFIG, descriptions)
    elif s.startswith("pretrained:"):
        parts = s.split(":")
        model = build_model(get_config(parts[1] or DEFAULT_CONFIG), descriptions, num_classes=7,
                            pretrained=parts[2] if len(parts) > 2 else "openai")
    elif p.is_dir() or p.suffix == ".safetensors":
        model = load_own(p, descriptions)
    elif p.suffix in (".pth", ".pt", ".tar", ".bin") or p.is_file():
        model = load_official(p, descriptions)
    elif _HUB_ID.match(s):
        cfg = hub.hub_download(s, CONFIG_FILE)
        hub.hub_download(s, WEIGHTS_FILE)
        model = load_own(Path(cfg).parent, descriptions)
        model.weights_info["source"] = f"hf://{s}"
    elif (entry := published.get_entry(s)) is not None:
        model = load_published(entry, descriptions)
    else:
        raise CheckpointError(
            f"cannot find weights {s!r}: not a file, not a folder, not in {checkpoints_dir()}, not a Hub repo id, "
            f"not a published name ({', '.join(e.name for e in published.entries())})"
        )
    model = model.to(device=device, dtype=dtype) if dtype else model.to(device)
    return model.eval()


def load_published(entry: PublishedWeights, descriptions=None) -> nn.Module:
    """The entry's model (fetched first if needed); ``weights_info`` carries the entry's facts."""
    if entry.load_source:
        model = load_model(entry.load_source, descriptions=descriptions)
    else:
        folder = ensure_cached(entry)
        try:
            model = load_own(folder, descriptions)
        except CheckpointError as e:
            if folder != published.cache_folder(entry):  # the Hub's own cache: not ours to delete
                raise
            fetch.forget_converted(entry, str(e))  # corrupt (a disk fault, a copy cut short): fetched again
            model = load_own(ensure_cached(entry), descriptions)
    model.weights_info = entry.facts() | model.weights_info | {"published": entry.name}
    return model


def discover_models(folder: Path | None = None) -> list[Path]:
    """Loadable weights in ``checkpoints/``: own-format folders and official files."""
    folder = Path(folder or checkpoints_dir())
    if not folder.is_dir():
        return []
    found = [p for p in sorted(folder.iterdir()) if p.is_dir() and (p / CONFIG_FILE).is_file()]
    found += [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in (".pth", ".pt")]
    return found


__all__ = ["load_model", "load_published", "discover_models", "resolve_source", "save_model", "load_own", "convert",
           "read_official", "official_descriptions"]
