"""DFER-CLIP (Zhao & Patras, BMVC 2023) on open_clip's CLIP towers.

video (B, T, 3, H, W) --CLIP image tower per frame--> (B, T, D) --temporal transformer--> class token (B, D)
class descriptions --[SOS] ctx_1..ctx_n [description tokens] [EOT]--CLIP text tower--> (C, D)
logits = cos(video, class) * logit_scale (100, i.e. / 0.01)
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..config import ModelConfig
from ..text.descriptions import DescriptionSet
from ..text.tokens import tokenize
from .blocks import ModelFacts, TemporalTransformer, class_means, fp32_cosine_logits
from .clip_towers import build_clip, encode_token_embeddings
from .registry import register_model


class PromptLearner(nn.Module):
    """Learnable context vectors, one set per class (class-specific) or shared, initialised N(0, 0.02)."""

    def __init__(self, num_classes: int, n_ctx: int, width: int, class_specific: bool):
        super().__init__()
        shape = (num_classes, n_ctx, width) if class_specific else (n_ctx, width)
        self.ctx = nn.Parameter(torch.empty(shape).normal_(std=0.02))
        self.class_specific = class_specific
        self.n_ctx = n_ctx

    def context_for(self, class_index: torch.Tensor) -> torch.Tensor:  # (P,) -> (P, n_ctx, W)
        if self.class_specific:
            return self.ctx[class_index]
        return self.ctx.unsqueeze(0).expand(len(class_index), -1, -1)


@register_model("dferclip")
class DFERCLIP(ModelFacts, nn.Module):
    family = "dferclip"

    def __init__(self, config: ModelConfig, descriptions: DescriptionSet, clip_model: Optional[nn.Module] = None):
        super().__init__()
        self.config = config
        self.clip = clip_model if clip_model is not None else build_clip(config.clip)
        embed_dim = self.clip.text_projection.shape[1]
        width = self.clip.token_embedding.weight.shape[1]
        self.temporal = TemporalTransformer(embed_dim, config.input.num_frames, config.temporal)
        self.prompt = PromptLearner(
            descriptions.num_classes, config.prompt.n_ctx, width, config.prompt.class_specific
        )
        self.logit_scale = float(config.logit_scale)
        self.weights_info: dict = {"kind": "random", "trained": False, "source": None}
        self._class_cache: Optional[tuple] = None
        self.set_descriptions(descriptions)

    # --- text side -----------------------------------------------------------------------------
    def set_descriptions(self, descriptions: DescriptionSet) -> None:
        """Use these class descriptions (same classes as the learned contexts)."""
        if descriptions.num_classes != self.prompt.ctx.shape[0] and self.prompt.class_specific:
            raise ValueError(
                f"{descriptions.num_classes} classes given; this model's contexts are for "
                f"{self.prompt.ctx.shape[0]} classes"
            )
        self.descriptions = descriptions
        self._class_cache = None

    def prompt_strings(self, descriptions: Sequence[str]) -> list[str]:
        lead = " ".join([self.config.prompt.placeholder] * self.config.prompt.n_ctx) + " "
        return [lead + d for d in descriptions]

    def tokenize_prompts(self, descriptions: Sequence[str]) -> torch.Tensor:
        return tokenize(self.prompt_strings(descriptions), self.clip.context_length).to(
            self.clip.token_embedding.weight.device
        )

    def prompt_embeddings(self, descriptions: Sequence[str], class_index: Sequence[int]):
        """Token ids and prompt embeddings (P, L, W): SOS, ctx[class], description tokens, EOT, padding."""
        tokens = self.tokenize_prompts(descriptions)
        emb = self.clip.token_embedding(tokens)
        n = self.config.prompt.n_ctx
        ctx = self.prompt.context_for(torch.as_tensor(list(class_index), device=tokens.device))
        return tokens, torch.cat([emb[:, :1], ctx.to(emb.dtype), emb[:, 1 + n :]], dim=1)

    def encode_prompts(self, descriptions: Sequence[str], class_index: Sequence[int]) -> torch.Tensor:
        """Learned-prompt text features (P, D), before L2 normalisation."""
        tokens, prompts = self.prompt_embeddings(descriptions, class_index)
        return encode_token_embeddings(self.clip, prompts, tokens)

    def encode_classes(self, descriptions: Optional[DescriptionSet] = None) -> torch.Tensor:
        """One L2-normalised embedding per class; several descriptions of a class are averaged."""
        ds = descriptions or self.descriptions
        texts, index = [], []
        for c, descs in enumerate(ds.descriptions):
            texts += descs
            index += [c] * len(descs)
        return class_means(self.encode_prompts(texts, index), index, ds.num_classes)

    def _label_params(self) -> list[nn.Parameter]:
        return [self.prompt.ctx]

    # --- video side ----------------------------------------------------------------------------
    # encode_frames, encode_video, frame_features, embed_sequences: ModelFacts' single-stream ones

    def score(self, video_embedding: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) ``logit_scale * cos(v, c)``, in fp32 even under autocast."""
        return fp32_cosine_logits(video_embedding, class_embedding, self.logit_scale)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.score(self.encode_video(video), self.class_embeddings())

    # --- training helpers ----------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The official optimiser groups: temporal net, image encoder, prompt learner (text frozen)."""
        return {
            "temporal": list(self.temporal.parameters()),
            "image_encoder": list(self.clip.visual.parameters()),
            "prompt_learner": list(self.prompt.parameters()),
        }
