"""EmoCLIP (Foteinopoulou & Patras, FG 2024) on open_clip's CLIP towers: zero-shot by class descriptions.

video (B, T, 3, H, W) --CLIP image tower per frame--> (B, T, D) --temporal transformer--> class token (B, D)
class sentences --CLIP text tower (plain tokens, truncated to the context)--> (C, D)
logits = exp(log_logit_scale) * cos(video, class)

Facts from the official code (``NickyFot/EmoCLIP`` at 6b4decf, Apache-2.0; read for facts, nothing copied):

- ``architecture/video_clip.py`` (``VClip``): OpenAI CLIP ViT-B/32; the video embedding is the temporal
  transformer's class-token output over the per-frame ``encode_image`` features; the logit is
  ``logit_scale.exp()`` times the cosine, ``logit_scale`` a learned copy of CLIP's (about ln 100);
  ``eval.py`` builds ``VClip(num_layers=2)``.
- ``architecture/transformer.py``: a learned class token and a learned table of 1024 positions; pre-norm
  residual blocks (LayerNorm eps 1e-5); attention of 8 heads of width 2048 (inner width 16384) with q/k/v
  Linear without bias and an output Linear with bias, softmax(q k^T / sqrt(2048)); feed-forward Linear
  512 -> 512, tanh-approximated GELU, Linear 512 -> 512; no dropout in effect. :class:`blocks.TemporalTransformer`
  with a 1024-position table is that network.
- ``eval.py``: the class prompts are the class sentences of ``DataLoaders/class_descriptions.yml`` alone (no
  template), tokenized with ``truncate=True``; shipped here as ``descriptions/emoclip-official-{mafw,dfew}.json``.
  The official forward runs under CUDA autocast (fp16): a documented difference, this model computes in
  the caller's precision and scores in fp32 (:func:`blocks.fp32_cosine_logits`).
- Compound classes (the paper, arXiv 2310.16640, on MAFW's compound expressions): a compound's embedding is
  the average of its components' embeddings. The official code has no such step (its loaders split
  compound labels such as ``anger_disgust`` into lists and its evaluation uses single labels), so here
  :func:`compound_descriptions` gives each compound class its components' sentences and
  :meth:`EmoCLIP.encode_classes` averages a class's L2-normalised sentence embeddings, then normalises.

Input, from ``DataLoaders/`` and ``experiments/DFEW_zeroshot_hpc.sh``, and where it differs from DFER-CLIP's:

- Frames: every 4th frame of the face-frame sequence (``TemporalDownSample(4)``; MAFW training used 2),
  then 32 consecutive ones of those (``RandomSequence(32)``), sampler ``"window:4"``. The official loader
  starts the run at random even at test time; here it is centred (deterministic). DFER-CLIP takes 16
  frames, the middle frame of each of 16 equal segments.
- Pixels: CLIP's mean/std normalisation and a bicubic resize to 224 (official: ``Resize(224, BICUBIC,
  antialias=None)`` on tensors, which in its pinned torchvision 0.14 does not antialias, then
  ``CenterCrop(224)``; here PIL's bicubic, antialiased, on the square face crop, where the centre crop has
  nothing to cut). DFER-CLIP: bilinear resize, pixels / 255 with no mean/std.

There are no learned prompts: ``has_learned_prompts`` is False, and the scoring modes ``zero-shot`` and
the model's own path are the same computation (:meth:`zero_shot_video` is the temporal video embedding and
:meth:`zero_shot_texts` the bare sentences), so EmoCLIP's zero-shot scores are never plain CLIP's.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..text.descriptions import DescriptionSet
from .blocks import ModelFacts, TemporalTransformer, class_means, fp32_cosine_logits
from .clip_towers import build_clip
from .registry import register_model

POSITIONS = 1024  # the official temporal position table


def compound_descriptions(base: DescriptionSet, compounds: Sequence[str], sep: str = "_") -> DescriptionSet:
    """A set whose classes are ``compounds`` (MAFW style: "anger_disgust"), each described by the sentences of
    its components in ``base``; with one sentence a component, as the official sets, the class embedding is
    the average of the component embeddings (see the module docstring)."""
    classes, descriptions = [], []
    for name in compounds:
        parts = name.split(sep)
        unknown = [p for p in parts if p not in base.classes]
        if unknown:
            raise ValueError(f"compound {name!r}: {', '.join(unknown)} not among the classes of {base.name!r}")
        classes.append(name)
        descriptions.append([d for p in parts for d in base.descriptions[base.classes.index(p)]])
    return DescriptionSet(classes=classes, descriptions=descriptions, name=f"{base.name}-compound",
                          class_set="custom", provenance={"compound_of": base.name, **base.provenance})


@register_model("emoclip")
class EmoCLIP(ModelFacts, nn.Module):
    family = "emoclip"
    has_learned_prompts = False  # zero-shot by class descriptions only (no "learned" scoring mode)
    official_descriptions = "emoclip-official"  # emoclip-official-dfew / -mafw

    def __init__(self, config: ModelConfig, descriptions: DescriptionSet, clip_model: Optional[nn.Module] = None):
        super().__init__()
        self.config = config
        self.clip = clip_model if clip_model is not None else build_clip(config.clip)
        embed_dim = self.clip.text_projection.shape[1]
        positions = int(config.extra.get("positions", POSITIONS))
        self.temporal = TemporalTransformer(embed_dim, config.input.num_frames, config.temporal, positions)
        start = self.clip.logit_scale.detach().clone() if clip_model is not None else math.log(config.logit_scale)
        self.log_logit_scale = nn.Parameter(torch.as_tensor(start, dtype=torch.float32).reshape(()))
        self.weights_info: dict = {"kind": "random", "trained": False, "source": None}
        self._class_cache: Optional[tuple] = None
        self.set_descriptions(descriptions)

    @property
    def logit_scale(self) -> float:
        """The multiplier of the cosine (exp of the learned log scale)."""
        return float(self.log_logit_scale.detach().float().exp())

    # --- text side -----------------------------------------------------------------------------
    def set_descriptions(self, descriptions: DescriptionSet) -> None:
        """Any classes: nothing learned is tied to them."""
        self.descriptions = descriptions
        self._class_cache = None

    def zero_shot_texts(self, descriptions: Optional[DescriptionSet] = None, templates=None):
        """Per class, templates x descriptions, each description written into a template as it is (no full
        stop added). EmoCLIP's config has the one template "{description}": the bare sentence, as ``eval.py``."""
        ds = descriptions or self.descriptions
        templates = templates or self.config.zero_shot_templates
        texts, index = [], []
        for c, (name, descs) in enumerate(zip(ds.classes, ds.descriptions)):
            for d in descs:
                texts += [t.format(name=name, description=d) for t in templates]
                index += [c] * len(templates)
        return texts, index

    def encode_classes(self, descriptions: Optional[DescriptionSet] = None) -> torch.Tensor:
        """One L2-normalised embedding per class: the normalised mean of its sentences' normalised embeddings."""
        ds = descriptions or self.descriptions
        texts, index = self.zero_shot_texts(ds)
        return class_means(self.encode_texts(texts), index, ds.num_classes)

    def _label_params(self) -> list[nn.Parameter]:
        c = self.clip
        return [c.token_embedding.weight, c.positional_embedding, c.text_projection, *c.transformer.parameters(),
                *c.ln_final.parameters()]

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

    def zero_shot_video(self, video: torch.Tensor) -> torch.Tensor:
        """EmoCLIP's zero-shot video embedding is its own (B, D), L2-normalised: not CLIP's frame average."""
        return F.normalize(self.encode_video(video), dim=-1)

    def frame_features(self, frames: torch.Tensor, renders: Optional[dict] = None) -> torch.Tensor:
        """(U, 3, H, W) model-input frames -> per-frame features (U, D)."""
        return self.encode_frames(frames.unsqueeze(0)).squeeze(0)

    def embed_sequences(self, features: torch.Tensor, positions: torch.Tensor, return_weights: bool = False):
        """Video embeddings (N, D) of N frame sequences given as (N, T) positions into ``features``."""
        emb = self.temporal(features[positions])
        return (emb, None) if return_weights else emb

    def score(self, video_embedding: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) ``exp(log_logit_scale) * cos(v, c)``, in fp32 even under autocast."""
        return fp32_cosine_logits(video_embedding, class_embedding, self.log_logit_scale.float().exp())

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.score(self.encode_video(video), self.class_embeddings())

    # --- training helpers ----------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The official training's trained parts (temporal net with the logit scale) and the image tower that
        its fine-tuning runs unfreeze; the text tower stays frozen."""
        return {
            "temporal": list(self.temporal.parameters()) + [self.log_logit_scale],
            "image_encoder": list(self.clip.visual.parameters()),
        }
