"""Blocks both model families share: the temporal transformer, the common model facts, per-class means."""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CLIP_MEAN, CLIP_STD, InputConfig, TemporalConfig
from ..text.descriptions import DescriptionSet
from ..text.tokens import tokenize
from .clip_towers import encode_token_embeddings


def class_means(feats: torch.Tensor, index: Sequence[int], num_classes: int) -> torch.Tensor:
    """Per class, the L2-normalised mean of its rows' L2-normalised features: (N, D) -> (C, D)."""
    feats = F.normalize(feats, dim=-1)
    summed = torch.zeros(num_classes, feats.shape[1], dtype=feats.dtype, device=feats.device)
    summed.index_add_(0, torch.as_tensor(list(index), device=feats.device), feats)
    return F.normalize(summed, dim=-1)


def fp32_cosine_logits(v: torch.Tensor, c: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * cos(v, c)`` (B, C) of embeddings ``v`` (B, D) and ``c`` (C, D), both normalised and multiplied in
    fp32 with autocast off: under bf16 autocast the matmul returns bf16 (8-bit mantissa), which moves a logit of
    16-32 by up to 0.06 and the probabilities of a near tie by 1-3e-2. Every model score goes through here."""
    with torch.autocast(v.device.type, enabled=False):
        v = F.normalize(v.float(), dim=-1)
        return scale * v @ F.normalize(c.float(), dim=-1).t()


class TemporalAttention(nn.Module):
    # set by dferclip.explain: returns a list to keep this call's attention probabilities in, or None
    weights_sink: Optional[Callable[[], Optional[list]]] = None

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, inner * 3, bias=False)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        keep = self.weights_sink() if self.weights_sink is not None else None
        if keep is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # the same attention with its probabilities kept (B, heads, T, T)
            attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
            keep.append(attn)
            out = attn @ v
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
    """Learnable class token + positional embedding for T+1 positions (or a longer table of ``positions``, as
    EmoCLIP's 1024); output = class token."""

    def __init__(self, dim: int, num_frames: int, cfg: TemporalConfig, positions: Optional[int] = None):
        super().__init__()
        positions = positions or num_frames + 1
        self.num_frames = positions - 1  # the most frames the table has positions for
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, positions, dim))
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


class ModelFacts:
    """What every model family shares: input convention, classes, embedding size, the cached class embeddings,
    the plain-CLIP zero-shot side (descriptions in prompt templates, ensembled; frame-averaged CLIP image
    features), and the defaults of :class:`dferclip.models.interface.DferModel` for a single-stream model."""

    family = "model"
    streams: tuple = ("video",)
    visual_streams: tuple = ("video",)
    needs_face_analysis = False
    uses_captions = False
    trains_on_captions = False  # EmoCLIP: captions only as training targets
    has_negative_prompts = False
    has_learned_prompts = True
    _class_cache = None

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

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) model input (or a training input dict) -> per-frame CLIP image features (B, T, D)."""
        if isinstance(video, Mapping):
            video = video["video"]
        if video.dim() != 5:
            raise ValueError(f"expected a video tensor (B, T, 3, H, W), got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        dtype = self.clip.visual.conv1.weight.dtype
        return self.clip.visual(video.flatten(0, 1).to(dtype)).view(b, t, -1)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> video embedding (B, D), before L2 normalisation: the temporal model over the
        frames' features."""
        return self.temporal(self.encode_frames(video))

    # frame-level API (dferclip.predict encodes each distinct frame of a clip and its timeline windows once,
    # then embeds every frame sequence from those features); FineCLIPER has its own, for its streams
    def frame_features(self, frames: torch.Tensor, renders: Optional[dict] = None) -> torch.Tensor:
        """(U, 3, H, W) model-input frames -> per-frame features (U, D)."""
        return self.encode_frames(frames.unsqueeze(0)).squeeze(0)

    def embed_sequences(self, features: torch.Tensor, positions: torch.Tensor, return_weights: bool = False):
        """Video embeddings (N, D) of N frame sequences given as (N, T) positions into ``features``; with
        ``return_weights`` also the streams' fusion weights, None for a single-stream model."""
        emb = self.temporal(features[positions])
        return (emb, None) if return_weights else emb

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
        return class_means(feats, index, n)

    # --- class embeddings, cached while nothing that makes them can change ----------------------------
    def _label_params(self) -> list[nn.Parameter]:
        """The trainable parameters class embeddings depend on (besides the frozen text tower)."""
        return []

    def class_embeddings(self, descriptions: Optional[DescriptionSet] = None) -> torch.Tensor:
        """Class embeddings of ``descriptions`` (default: the model's current ones). In eval without grad they
        are cached, keyed by the descriptions, every parameter that makes them (version, storage, dtype, device)
        and the autocast dtype.

        Thread-safe without a lock (the app runs events at once on one model): the entry is one
        ``(key, embeddings)`` tuple, read once into a local and both compared and returned from that local, so a
        thread never returns an entry another thread put there after its comparison; the set is read once, so
        what is encoded is what the key names. Two threads that miss at once both compute (outside any lock)
        and the later write wins, which is harmless."""
        ds = self.descriptions if descriptions is None else descriptions
        if self.training or torch.is_grad_enabled():
            return self.encode_classes(ds)
        tok = self.clip.token_embedding.weight
        device_type = tok.device.type
        autocast = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        key = (id(ds), ds.fingerprint(),
               tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in self._label_params()),
               tok.device, tok.dtype, autocast)
        cached = self._class_cache  # one read: another thread may replace the attribute at any moment
        if cached is not None and cached[0] == key:
            return cached[1]
        embeddings = self.encode_classes(ds)
        self._class_cache = (key, embeddings)
        return embeddings

    # --- plain-CLIP zero-shot video side ----------------------------------------------------------------
    def zero_shot_video(self, video: torch.Tensor) -> torch.Tensor:
        """Frame-averaged plain CLIP image embedding (B, D), L2-normalised, with CLIP's own normalisation."""
        x = InputConfig(mean=CLIP_MEAN, std=CLIP_STD).normalize(self.input_config.denormalize(video))
        b, t = x.shape[:2]
        frames = self.clip.visual(x.flatten(0, 1).to(self.clip.visual.conv1.weight.dtype)).view(b, t, -1)
        return F.normalize(F.normalize(frames, dim=-1).mean(dim=1), dim=-1)

    # --- what a single-stream model does where FineCLIPER does more -------------------------------------
    def prepare_inputs(self, video: torch.Tensor, captions=None):
        """Model input for a batch of clips: the video tensor itself."""
        return video

    def wrap_dataset(self, dataset, captions=None, analysis_cache=None):
        """The dataset a trainer iterates: unchanged for a single-stream model."""
        return dataset

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)
