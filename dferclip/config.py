"""Model configuration as data.

A model is described by one JSON-serialisable :class:`ModelConfig`. Its :class:`InputConfig` says how a
video must be turned into the tensor the model's ``forward`` takes, so the app, the CLI and training
preprocess correctly for whatever checkpoint is loaded.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Tuple

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CONFIG_DIR = Path(__file__).parent / "models" / "configs"


@dataclass(frozen=True)
class InputConfig:
    """How frames become model input.

    The official DFER-CLIP setting: 16 frames, each the middle frame of one of 16 equal segments,
    resized (bilinear, aspect ratio not kept) to 224x224, RGB scaled to [0, 1], no mean/std.
    """

    num_frames: int = 16
    image_size: int = 224
    sampler: str = "middle"  # official test rule: middle frame of each of num_frames segments; "window:K": EmoCLIP's
    resize: str = "bilinear"  # PIL resize of the square face crop straight to image_size ("bilinear" or "bicubic")
    mean: Optional[Tuple[float, float, float]] = None  # None: pixels / 255 only
    std: Optional[Tuple[float, float, float]] = None

    def __post_init__(self):
        if (self.mean is None) != (self.std is None):
            raise ValueError("InputConfig: give both mean and std, or neither")
        if self.num_frames < 1 or self.image_size < 8:
            raise ValueError("InputConfig: num_frames >= 1 and image_size >= 8 required")
        if self.mean is not None:
            object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
            object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB (..., 3, H, W) -> the tensor this model expects."""
        if self.mean is None:
            return x01
        mean = torch.tensor(self.mean, dtype=x01.dtype, device=x01.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x01.dtype, device=x01.device).view(3, 1, 1)
        return (x01 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: model input -> [0, 1] RGB."""
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return x * std + mean


@dataclass(frozen=True)
class TemporalConfig:
    layers: int = 1
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 1024


@dataclass(frozen=True)
class PromptConfig:
    n_ctx: int = 8
    class_specific: bool = True
    placeholder: str = "X"  # the official prompt string is "X X X X X X X X " + description


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model, except its weights and its class descriptions."""

    family: str = "dferclip"
    # open_clip architecture: a registered name (e.g. "ViT-B-32-quickgelu") or a full config dict
    clip: Any = "ViT-B-32-quickgelu"
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    input: InputConfig = field(default_factory=InputConfig)
    logit_scale: float = 100.0  # logits = cos / 0.01; CLIP's own logit_scale is not used
    zero_shot_templates: Tuple[str, ...] = (
        "a photo of a face with {description}",
        "a face showing {name}: {description}",
        "a person with an expression of {name}, with {description}",
    )
    extra: dict = field(default_factory=dict)  # family-specific settings (e.g. FineCLIPER)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["zero_shot_templates"] = list(self.zero_shot_templates)
        for k in ("mean", "std"):
            if d["input"][k] is not None:
                d["input"][k] = list(d["input"][k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        if "temporal" in d:
            d["temporal"] = TemporalConfig(**d["temporal"])
        if "prompt" in d:
            d["prompt"] = PromptConfig(**d["prompt"])
        if "input" in d:
            d["input"] = InputConfig(**d["input"])
        if "zero_shot_templates" in d:
            d["zero_shot_templates"] = tuple(d["zero_shot_templates"])
        return cls(**d)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_config(name_or_path: str | Path) -> ModelConfig:
    """A named architecture from ``dferclip/models/configs`` or a JSON file path."""
    p = Path(name_or_path)
    if not p.suffix:
        p = CONFIG_DIR / f"{name_or_path}.json"
    if not p.is_file():
        raise FileNotFoundError(
            f"no model config {str(name_or_path)!r}; available: {', '.join(available_configs())}"
        )
    return ModelConfig.from_dict(json.loads(p.read_text()))
