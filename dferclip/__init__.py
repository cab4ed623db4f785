"""dferclip: dynamic facial expression recognition from video with CLIP (DFER-CLIP and kin).

The library imports without gradio. Main entry points::

    model = dferclip.load_model("dfew-fold1")                    # a published name, a folder, an official .pth,
                                                                  # a Hub id, "random"
    logits = model(video)                                         # (B, T, 3, H, W) -> (B, C)

Names are imported on first use, so ``import dferclip`` (and the CLI's argument checks) stay fast.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "weights.checkpoints", "save_model": "weights.checkpoints", "convert": "weights.checkpoints",
    "discover_models": "weights.checkpoints", "build_model": "models",
    "InputConfig": "config", "ModelConfig": "config", "available_configs": "config", "get_config": "config",
    "DescriptionSet": "text.descriptions", "load_description_set": "text.descriptions",
    "official_descriptions": "text.descriptions", "DferclipError": "errors",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dferclip' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # for type checkers and IDEs
    from .config import InputConfig, ModelConfig, available_configs, get_config  # noqa: F401
    from .errors import DferclipError  # noqa: F401
    from .models import build_model  # noqa: F401
    from .text.descriptions import DescriptionSet, load_description_set, official_descriptions  # noqa: F401
    from .weights.checkpoints import convert, discover_models, load_model, save_model  # noqa: F401
