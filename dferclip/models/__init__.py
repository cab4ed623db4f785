"""A small factory: model families are registered by name; architectures are JSON configs."""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from ..config import ModelConfig, get_config
from ..descriptions import DescriptionSet, as_description_set

_FAMILIES: dict[str, Callable[..., nn.Module]] = {}


def register_family(name: str, builder: Callable[..., nn.Module]) -> None:
    """``builder(config, descriptions, clip_model=None) -> nn.Module``."""
    _FAMILIES[name] = builder


def _builder(family: str):
    if family == "dferclip" and family not in _FAMILIES:
        from .dferclip import DFERCLIP

        register_family("dferclip", DFERCLIP)
    if family == "fineclipper" and family not in _FAMILIES:
        from . import fineclipper  # noqa: F401  (registers the family)
    if family not in _FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: dferclip, fineclipper")
    return _FAMILIES[family]


def build_model(
    config: ModelConfig | str,
    descriptions: DescriptionSet | str | None = None,
    *,
    num_classes: int = 7,
    pretrained: Optional[str] = None,
) -> nn.Module:
    """A new model. ``pretrained`` names open_clip weights for the CLIP towers (e.g. "openai");
    without it every weight is random."""
    if isinstance(config, str):
        config = get_config(config)
    n = descriptions.num_classes if isinstance(descriptions, DescriptionSet) else num_classes
    ds = as_description_set(descriptions, n)
    clip_model = None
    if pretrained:
        from ..hub import pretrained_clip

        clip_model = pretrained_clip(config.clip, pretrained)
    model = _builder(config.family)(config, ds, clip_model=clip_model)
    if pretrained:
        model.weights_info = {
            "kind": "pretrained-clip",
            "trained": False,
            "source": f"open_clip {config.clip} / {pretrained}",
        }
    return model
