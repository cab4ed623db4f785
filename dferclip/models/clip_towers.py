"""CLIP towers from open_clip (OpenAI layout, QuickGELU) and a text encoder that takes embeddings."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def clip_config_dict(clip: Any) -> dict:
    """An open_clip architecture as a dict: a registered name (e.g. "ViT-B-32-quickgelu") or a dict."""
    import open_clip

    if isinstance(clip, str):
        cfg = open_clip.get_model_config(clip)
        if cfg is None:
            raise ValueError(f"unknown open_clip architecture {clip!r}")
        cfg = copy.deepcopy(cfg)
        cfg.setdefault("quick_gelu", clip.endswith("-quickgelu"))
        return cfg
    return copy.deepcopy(dict(clip))


def build_clip(clip: Any) -> nn.Module:
    """A randomly initialised open_clip ``CLIP`` (standard, non-custom-text) for this architecture."""
    import open_clip

    cfg = clip_config_dict(clip)
    quick_gelu = bool(cfg.pop("quick_gelu", True))
    cfg.pop("custom_text", None)
    return open_clip.CLIP(**cfg, quick_gelu=quick_gelu)


def encode_token_embeddings(clip: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP text tower on token embeddings (N, L, W): causal mask, ln_final, EOT (argmax id) pooling,
    text projection. Returns (N, D) before L2 normalisation.

    Attention is causal, so positions after the last EOT in the batch cannot change the result: the
    tower runs on the first ``max(EOT) + 1`` positions only."""
    eot = tokens.argmax(dim=-1)
    n = int(eot.max()) + 1
    x = x[:, :n] + clip.positional_embedding[:n].to(x.dtype)
    mask = clip.attn_mask[:n, :n] if clip.attn_mask is not None else None
    x = clip.transformer(x, attn_mask=mask)
    x = clip.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    return x @ clip.text_projection.to(x.dtype)
