"""Model families (registered by name with ``@register_model``) built from architectures given as JSON configs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


from ..config import ModelConfig, get_config
from ..text.descriptions import DescriptionSet, as_description_set, load_description_set
from . import dferclip, emoclip, fineclipper  # noqa: F401  (each registers its family)
from .interface import DferModel
from .registry import families, model_family, register_model


def build_model(
    config: ModelConfig | str,
    descriptions: DescriptionSet | str | None = None,
    *,
    num_classes: int = 7,
    pretrained: Optional[str] = None,
) -> DferModel:
    """A new model. ``pretrained`` names open_clip weights for the CLIP towers (e.g. "openai");
    without it every weight is random."""
    if isinstance(config, str):
        config = get_config(config)
    family = model_family(config.family)
    if not getattr(family, "has_learned_prompts", True) and isinstance(descriptions, (str, Path)):
        descriptions = load_description_set(descriptions)  # nothing learned per class: any number of classes
    n = descriptions.num_classes if isinstance(descriptions, DescriptionSet) else num_classes
    ds = as_description_set(descriptions, n, getattr(family, "official_descriptions", "dferclip-official"))
    clip_model = None
    if pretrained:
        from ..weights.hub import pretrained_clip

        clip_model = pretrained_clip(config.clip, pretrained)
    model = family(config, ds, clip_model=clip_model)
    if pretrained:
        model.weights_info = {
            "kind": "pretrained-clip",
            "trained": False,
            "source": f"open_clip {config.clip} / {pretrained}",
        }
    return model


__all__ = ["build_model", "DferModel", "register_model", "model_family", "families"]
