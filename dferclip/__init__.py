"""dferclip: dynamic facial expression recognition from video with CLIP (DFER-CLIP and kin).

The library imports without gradio. Main entry points::

    model = dferclip.load_model("checkpoints/dfew-fold1")       # or an official .pth, a Hub id, "random"
    logits = model(video)                                         # (B, T, 3, H, W) -> (B, C)
"""
from .config import InputConfig, ModelConfig, available_configs, get_config
from .errors import DferclipError
from .models import build_model
from .text.descriptions import (
    DescriptionSet,
    load_description_set,
    official_descriptions,
)
from .weights.checkpoints import convert, discover_models, load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "load_model", "save_model", "convert", "discover_models", "build_model",
    "InputConfig", "ModelConfig", "available_configs", "get_config",
    "DescriptionSet", "load_description_set", "official_descriptions", "DferclipError",
]
