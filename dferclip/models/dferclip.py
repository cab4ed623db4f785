"""DFER-CLIP (Zhao & Patras, BMVC 2023) on open_clip's CLIP towers.

video (B, T, 3, H, W) --CLIP image tower per frame--> (B, T, D) --temporal transformer--> class token (B, D)
class descriptions --[SOS] ctx_1..ctx_n [description tokens] [EOT]--CLIP text tower--> (C, D)
logits = cos(video, class) * logit_scale (100, i.e. / 0.01)
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CLIP_MEAN, CLIP_STD, InputConfig, ModelConfig, TemporalConfig
from ..descriptions import DescriptionSet
from ..text import tokenize
from .clip_towers import build_clip, encode_token_embeddings


class TemporalAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, inner * 3, bias=False)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class TemporalBlock(nn.Module):
    """Pre-norm block: LayerNorm eps 1e-5, qkv without bias, MLP with tanh-approximated GELU."""

    def __init__(self, dim: int, cfg: TemporalConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = TemporalAttention(dim, cfg.heads, cfg.dim_head)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.fc1 = nn.Linear(dim, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class TemporalTransformer(nn.Module):
    """Learnable class token + positional embedding for T+1 positions; output = class token."""

    def __init__(self, dim: int, num_frames: int, cfg: TemporalConfig):
        super().__init__()
        self.num_frames = num_frames
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, num_frames + 1, dim))
        self.layers = nn.ModuleList(TemporalBlock(dim, cfg) for _ in range(cfg.layers))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, D)
        b, t, _ = frames.shape
        if t > self.num_frames:
            raise ValueError(f"model takes at most {self.num_frames} frames, got {t}")
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(frames.dtype), frames], dim=1)
        x = x + self.pos_embedding[:, : t + 1].to(frames.dtype)
        for layer in self.layers:
            x = layer(x)
        return x[:, 0]


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


class ModelFacts:
    """What every model family shares: input convention, classes, embedding size, and the plain-CLIP
    zero-shot text side (descriptions in prompt templates, ensembled)."""

    @property
    def input_config(self) -> InputConfig:
        return self.config.input

    @property
    def class_names(self) -> list[str]:
        return list(self.descriptions.classes)

    @property
    def num_classes(self) -> int:
        return self.descriptions.num_classes

    @property
    def embed_dim(self) -> int:
        return self.clip.text_projection.shape[1]

    def zero_shot_texts(self, descriptions: Optional[DescriptionSet] = None, templates=None):
        """The prompt strings of the zero-shot classifier: per class, templates x descriptions."""
        ds = descriptions or self.descriptions
        templates = templates or self.config.zero_shot_templates
        texts, index = [], []
        for c, (name, descs) in enumerate(zip(ds.classes, ds.descriptions)):
            for d in descs:
                for t in templates:
                    texts.append(t.format(name=name, description=d.rstrip(".")) + ".")
                    index.append(c)
        return texts, index

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Plain CLIP text features (N, D), L2-normalised."""
        tokens = tokenize(list(texts), self.clip.context_length).to(self.clip.token_embedding.weight.device)
        return F.normalize(encode_token_embeddings(self.clip, self.clip.token_embedding(tokens), tokens), dim=-1)

    def zero_shot_classes(self, descriptions: Optional[DescriptionSet] = None, templates=None) -> torch.Tensor:
        """CLIP prompt ensembling: mean of normalised prompt embeddings per class, re-normalised."""
        texts, index = self.zero_shot_texts(descriptions, templates)
        feats = self.encode_texts(texts)
        n = (descriptions or self.descriptions).num_classes
        summed = torch.zeros(n, feats.shape[1], dtype=feats.dtype, device=feats.device)
        summed.index_add_(0, torch.as_tensor(index, device=feats.device), feats)
        return F.normalize(summed, dim=-1)


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
        feats = F.normalize(self.encode_prompts(texts, index), dim=-1)
        idx = torch.as_tensor(index, device=feats.device)
        summed = torch.zeros(ds.num_classes, feats.shape[1], device=feats.device, dtype=feats.dtype)
        summed.index_add_(0, idx, feats)
        return F.normalize(summed, dim=-1)

    def class_embeddings(self) -> torch.Tensor:
        """The current descriptions' class embeddings, cached while nothing can change them."""
        if self.training or torch.is_grad_enabled():
            return self.encode_classes()
        p = self.prompt.ctx
        key = (id(self.descriptions), p._version, p.data_ptr(), p.dtype, p.device)
        if self._class_cache is None or self._class_cache[0] != key:
            self._class_cache = (key, self.encode_classes())
        return self._class_cache[1]

    # --- video side ----------------------------------------------------------------------------
    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) model input -> per-frame CLIP image features (B, T, D)."""
        if video.dim() != 5:
            raise ValueError(f"expected a video tensor (B, T, 3, H, W), got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        dtype = self.clip.visual.conv1.weight.dtype
        return self.clip.visual(video.flatten(0, 1).to(dtype)).view(b, t, -1)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> video embedding (B, D), before L2 normalisation."""
        return self.temporal(self.encode_frames(video))

    # frame-level API shared with FineCLIPER (dferclip.predict encodes each distinct frame of a clip and its
    # timeline windows once, then embeds every frame sequence from those features)
    def frame_features(self, frames: torch.Tensor, renders: Optional[dict] = None) -> torch.Tensor:
        """(U, 3, H, W) model-input frames -> per-frame features (U, D)."""
        return self.encode_frames(frames.unsqueeze(0)).squeeze(0)

    def embed_sequences(self, features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Video embeddings (N, D) of N frame sequences given as (N, T) positions into ``features``."""
        return self.temporal(features[positions])

    def score(self, video_embedding: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        v = F.normalize(video_embedding, dim=-1)
        return self.logit_scale * v @ F.normalize(class_embedding, dim=-1).to(v.dtype).t()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.score(self.encode_video(video), self.class_embeddings())

    # --- zero-shot path on the same towers -----------------------------------------------------
    def zero_shot_video(self, video: torch.Tensor) -> torch.Tensor:
        """Frame-averaged CLIP image embedding (B, D), L2-normalised, with CLIP's own normalisation."""
        x01 = self.input_config.denormalize(video)
        x = InputConfig(mean=CLIP_MEAN, std=CLIP_STD).normalize(x01)
        frames = F.normalize(self.encode_frames(x), dim=-1)
        return F.normalize(frames.mean(dim=1), dim=-1)

    # --- training helpers ----------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The official optimiser groups: temporal net, image encoder, prompt learner (text frozen)."""
        return {
            "temporal": list(self.temporal.parameters()),
            "image_encoder": list(self.clip.visual.parameters()),
            "prompt_learner": list(self.prompt.parameters()),
        }
