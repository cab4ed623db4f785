"""FineCLIPER (Chen et al., ACM MM 2024): multi-modal fine-grained CLIP with adapters. No official code or
weights exist; this is a re-implementation from the paper's figures and tables
(``docs/fineclipper.md`` lists every choice the paper leaves open and the setting that selects it).

Streams (``extra.streams``; the paper's Table 1 variants are named in :data:`VARIANTS`):

- ``video``: face frames -> frozen CLIP ViT with AIM adapters -> DFER-CLIP's temporal transformer (default);
- ``parsing`` / ``landmarks``: per-frame parsing maps and landmark drawings (:mod:`dferclip.face_analysis`)
  -> the same frozen ViT with their own adapters -> frame mean;
- ``caption``: a refined fine-grained description of the clip (:mod:`dferclip.captions`) -> the frozen CLIP
  text transformer with a caption adapter.

Stream embeddings are L2-normalised and fused with adaptive weights (softmax over learned scalars, or a
gate over the features; a stream missing for a clip, e.g. a clip without caption, gets weight 0).

Label side: per class a positive descriptor ("A person with an expression of {name}") through the positive
adapters and a negative one ("... of no {name}") through the negative adapters of the frozen text tower.
``logits = scale * (cos(v, pos_c) - negative_weight * cos(v, neg_c))``; :meth:`FineCLIPER.loss` implements
the PN losses. Everything but the adapters, the temporal transformer and the fusion weights is frozen.

Model input: a video tensor (B, T, 3, H, W) as for DFER-CLIP, or a dict with ``video`` and optionally
``parsing``/``landmarks`` (same shape, rendered and normalised like the video), ``caption_tokens`` (B, 77)
and ``caption_present`` (B,) bool. Missing parsing/landmark renders are computed from the video frames with
the model's face analyzer; missing captions drop the caption stream for those clips.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..text.descriptions import DescriptionSet
from ..text.tokens import tokenize
from .adapters import AdapterSpec, adapt_transformer, adapter_parameters, route
from .blocks import ModelFacts, TemporalTransformer, class_means, fp32_cosine_logits
from .clip_towers import build_clip, encode_token_embeddings
from .registry import register_model

log = logging.getLogger(__name__)

STREAMS = ("video", "parsing", "landmarks", "caption")
VISUAL_STREAMS = ("video", "parsing", "landmarks")
# Table 1 of the paper: FineCLIPER, * (+ parsing & landmarks), dagger (+ fine-grained text), *dagger (all).
VARIANTS = {
    "base": ("video",),
    "mid": ("video", "parsing", "landmarks"),
    "text": ("video", "caption"),
    "full": ("video", "parsing", "landmarks", "caption"),
}
LOSSES = ("pn-ce", "diff-ce", "pn-margin")
FUSIONS = ("learned", "gated", "fixed")


@dataclass(frozen=True)
class FineSettings:
    """FineCLIPER's settings (``ModelConfig.extra``). Defaults and their evidence: docs/fineclipper.md."""

    streams: tuple = ("video",)
    mode: str = "supervised"  # or "zero-shot": trained on captions only (contrastive video <-> caption)
    video_adapter: AdapterSpec = AdapterSpec(serial=True, parallel=True, ratio=0.25, scale=0.5)
    mid_adapter: AdapterSpec = AdapterSpec(serial=True, parallel=True, ratio=0.125, scale=0.5)
    label_adapter: AdapterSpec = AdapterSpec(serial=True, parallel=False, ratio=0.25)  # positive and negative
    caption_adapter: AdapterSpec = AdapterSpec(serial=True, parallel=False, ratio=0.25)
    temporal: str = "transformer"  # video stream: DFER-CLIP's temporal transformer, or "mean"
    descriptors: str = "label"  # "label": PN label prompts; "descriptions": the description set's texts
    label_templates: tuple = ("A person with an expression of {name}", "A person with an expression of no {name}")
    description_templates: tuple = ("{description}", "A person with an expression of no {name}")
    negative_weight: float = 1.0  # lambda of the inference rule pos - lambda * neg
    loss: str = "pn-ce"
    negative_loss_weight: float = 1.0  # beta: weight of the negative term of pn-ce / pn-margin
    margin: float = 0.1  # pn-margin: cos(v, neg_y) + margin <= cos(v, pos_y)
    fusion: str = "learned"
    fixed_video_weight: float = 0.5  # fusion="fixed": the video stream's weight, the rest share 1 - it
    align_weight: float = 0.0  # supervised mode: + align_weight * InfoNCE(video stream, caption)

    def __post_init__(self):
        streams = tuple(self.streams)
        object.__setattr__(self, "streams", streams)
        bad = [s for s in streams if s not in STREAMS]
        if bad or not streams or len(set(streams)) != len(streams):
            raise ValueError(f"streams must be distinct names from {STREAMS}, got {list(streams)}")
        if self.mode not in ("supervised", "zero-shot"):
            raise ValueError("mode must be 'supervised' or 'zero-shot'")
        if self.mode == "zero-shot" and ("caption" in streams or not set(streams) & set(VISUAL_STREAMS)):
            raise ValueError("zero-shot mode learns from captions: its streams are visual ones only")
        for name, allowed in (("loss", LOSSES), ("fusion", FUSIONS), ("temporal", ("transformer", "mean")),
                              ("descriptors", ("label", "descriptions"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("video_adapter", "mid_adapter", "label_adapter", "caption_adapter"):
            v = getattr(self, name)
            if isinstance(v, Mapping):
                object.__setattr__(self, name, AdapterSpec.from_dict(dict(v)))
        object.__setattr__(self, "label_templates", tuple(self.label_templates))
        object.__setattr__(self, "description_templates", tuple(self.description_templates))

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> "FineSettings":
        d = dict(extra or {})
        variant = d.pop("variant", None)
        if variant is not None:
            if variant not in VARIANTS:
                raise ValueError(f"unknown FineCLIPER variant {variant!r}; known: {sorted(VARIANTS)}")
            d.setdefault("streams", VARIANTS[variant])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown FineCLIPER settings: {sorted(unknown)}")
        return cls(**d)

    def to_extra(self) -> dict:
        d = dataclasses.asdict(self)
        d["streams"] = list(self.streams)
        d["label_templates"] = list(self.label_templates)
        d["description_templates"] = list(self.description_templates)
        return d

    @property
    def text_streams(self) -> tuple:
        if self.mode == "zero-shot":
            return ("caption",)
        return ("pos", "neg", "caption") if "caption" in self.streams or self.align_weight else ("pos", "neg")


class Fusion(nn.Module):
    """Adaptive stream weights: softmax over learned scalars ("learned"), over a linear gate of the
    concatenated stream embeddings ("gated"), or fixed weights ("fixed"). Missing streams get weight 0."""

    def __init__(self, streams: Sequence[str], kind: str, dim: int, fixed_video_weight: float):
        super().__init__()
        self.streams = tuple(streams)
        self.kind = kind
        n = len(self.streams)
        if kind == "learned":
            self.logits = nn.Parameter(torch.zeros(n))
        elif kind == "gated":
            self.gate = nn.Linear(n * dim, n)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
        else:
            rest = (1.0 - fixed_video_weight) / max(n - 1, 1)
            w = [fixed_video_weight if s == "video" else rest for s in self.streams]
            self.register_buffer("fixed", torch.log(torch.tensor(w).clamp_min(1e-12)), persistent=False)

    def weights(self, feats: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(B, S, D) normalised stream embeddings, (B, S) bool -> (B, S) weights summing to 1 per clip (all 0 for a
        clip with no stream present: its fused embedding is 0 and its class scores are even)."""
        if self.kind == "learned":
            logits = self.logits.to(feats.dtype).expand(feats.shape[0], -1)
        elif self.kind == "gated":
            logits = self.gate((feats * present[..., None]).flatten(1).to(self.gate.weight.dtype)).to(feats.dtype)
        else:
            logits = self.fixed.to(feats.dtype).expand(feats.shape[0], -1)
        # finfo.min rather than -inf: a clip with no stream at all gets all-zero weights, not 0/0 = NaN
        return logits.masked_fill(~present, torch.finfo(logits.dtype).min).softmax(dim=-1) * present

    def forward(self, feats: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        w = self.weights(feats, present)
        return (w[..., None] * feats.masked_fill(~present[..., None], 0)).sum(dim=1)


@dataclass
class FineOutputs:
    """What one training forward leaves for :meth:`FineCLIPER.loss`."""

    pos: torch.Tensor  # (B, C) cos(v, pos_c)
    neg: torch.Tensor  # (B, C) cos(v, neg_c)
    video: Optional[torch.Tensor] = None  # (B, D) normalised video-side embedding (alignment losses)
    caption: Optional[torch.Tensor] = None  # (B, D) normalised caption embedding
    caption_present: Optional[torch.Tensor] = None  # (B,) bool


def _in_ddp() -> bool:
    """Whether this process trains with others (DDP), which reduce every trainable parameter each step."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@register_model("fineclipper")
class FineCLIPER(ModelFacts, nn.Module):
    has_negative_prompts = True

    def __init__(self, config: ModelConfig, descriptions: DescriptionSet, clip_model: Optional[nn.Module] = None):
        super().__init__()
        self.config = config
        self.settings = FineSettings.from_extra(config.extra)
        s = self.settings
        self.clip = clip_model if clip_model is not None else build_clip(config.clip)
        self.clip.requires_grad_(False)
        visual = {"video": s.video_adapter, "parsing": s.mid_adapter, "landmarks": s.mid_adapter}
        adapt_transformer(self.clip.visual.transformer, {k: v for k, v in visual.items() if k in s.streams})
        text = {"pos": s.label_adapter, "neg": s.label_adapter, "caption": s.caption_adapter}
        adapt_transformer(self.clip.transformer, {k: text[k] for k in s.text_streams})
        dim = self.embed_dim
        self.temporal = (TemporalTransformer(dim, config.input.num_frames, config.temporal)
                         if s.temporal == "transformer" and "video" in s.streams else None)
        if self.temporal is not None:  # small tokens, so a fresh model passes the frozen frame features on
            nn.init.normal_(self.temporal.cls_token, std=0.02)
            nn.init.normal_(self.temporal.pos_embedding, std=0.02)
        self.fusion = Fusion(s.streams, s.fusion, dim, s.fixed_video_weight)
        self.logit_scale = float(config.logit_scale)
        self.negative_weight = 0.0 if s.mode == "zero-shot" else float(s.negative_weight)
        self.weights_info: dict = {"kind": "random", "trained": False, "source": None}
        self.face_analyzer = None  # a dferclip.face_analysis.FaceAnalyzer; None: MediaPipe on first use
        self.analysis_cache = None  # a dferclip.face_analysis.AnalysisCache, or None
        self._class_cache: Optional[tuple] = None
        self._last: Optional[FineOutputs] = None
        self.set_descriptions(descriptions)

    @property
    def visual_blocks(self) -> nn.ModuleList:
        return self.clip.visual.transformer.resblocks

    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.clip.transformer.resblocks

    @property
    def streams(self) -> tuple:
        return self.settings.streams

    @property
    def needs_face_analysis(self) -> bool:
        return bool({"parsing", "landmarks"} & set(self.streams))

    @property
    def uses_captions(self) -> bool:
        return "caption" in self.streams or self.settings.mode == "zero-shot" or self.settings.align_weight > 0

    # --- label side --------------------------------------------------------------------------------
    def set_descriptions(self, descriptions: DescriptionSet) -> None:
        """Use these classes (and, with ``descriptors="descriptions"``, their texts)."""
        self.descriptions = descriptions
        self._class_cache = None

    def _templates(self) -> tuple[str, str]:
        s = self.settings
        return s.label_templates if s.descriptors == "label" else s.description_templates

    def descriptor_texts(self, descriptions: Optional[DescriptionSet] = None) -> tuple[list, list, list]:
        """(positive texts, negative texts, class index) of the PN descriptors; duplicates removed per class."""
        ds = descriptions or self.descriptions
        pos_t, neg_t = self._templates()
        pos, neg, index = [], [], []
        for c, (name, descs) in enumerate(zip(ds.classes, ds.descriptions)):
            seen = set()
            for d in descs:
                pair = (pos_t.format(name=name, description=d.strip()), neg_t.format(name=name, description=d.strip()))
                if pair not in seen:
                    seen.add(pair)
                    pos.append(pair[0])
                    neg.append(pair[1])
                    index.append(c)
        return pos, neg, index

    def _encode_text(self, parts: Sequence[tuple[str, Sequence[str]]]) -> list[torch.Tensor]:
        """Texts of several text streams in one pass; returns unnormalised features per part."""
        texts = [t for _, ts in parts for t in ts]
        device = self.clip.token_embedding.weight.device
        tokens = tokenize(texts, self.clip.context_length).to(device)
        return self._encode_tokens(tokens, [(name, len(ts)) for name, ts in parts])

    def _encode_tokens(self, tokens: torch.Tensor, parts: Sequence[tuple[str, int]]) -> list[torch.Tensor]:
        with route(*parts):
            feats = encode_token_embeddings(self.clip, self.clip.token_embedding(tokens), tokens)
        return list(feats.split([n for _, n in parts]))

    def _label_streams(self) -> tuple[str, str]:
        return ("caption", "neg") if self.settings.mode == "zero-shot" else ("pos", "neg")

    @property
    def descriptor_templates(self) -> tuple[str, str]:
        """(positive, negative) templates that descriptions are written into for the workbench: the model's
        own when its positive template uses ``{description}``, else ``description_templates`` (the paper's
        description alternative), so that edited descriptions change the scores."""
        own = self._templates()
        return own if "{description}" in own[0] else self.settings.description_templates

    def descriptor_prompts(self, texts: Sequence[str], class_index: Sequence[int], negative: bool = False) -> list[str]:
        """Descriptions ``texts`` of classes ``class_index`` written into :attr:`descriptor_templates`."""
        names = self.descriptions.classes
        template = self.descriptor_templates[1 if negative else 0]
        return [template.format(name=names[c], description=t.strip()) for t, c in zip(texts, class_index)]

    def encode_prompts(self, texts: Sequence[str], class_index: Sequence[int], negative: bool = False) -> torch.Tensor:
        """Descriptor features (P, D) before normalisation for descriptions ``texts`` of classes
        ``class_index`` (the workbench's learned path), written into :attr:`descriptor_templates`: positive
        ones through the positive adapters, or negative ones through the negative adapters (``negative=True``)."""
        built = self.descriptor_prompts(texts, class_index, negative)
        return self._encode_text([(self._label_streams()[1 if negative else 0], built)])[0]

    def encode_classes(self, descriptions: Optional[DescriptionSet] = None) -> torch.Tensor:
        """(C, 2, D): per class the normalised mean of its positive [:, 0] and negative [:, 1] descriptors."""
        ds = descriptions or self.descriptions
        pos, neg, index = self.descriptor_texts(ds)
        pos_stream, neg_stream = self._label_streams()
        fp, fn = self._encode_text([(pos_stream, pos), (neg_stream, neg)])
        return torch.stack([class_means(fp, index, ds.num_classes), class_means(fn, index, ds.num_classes)], dim=1)

    def _label_params(self) -> list[nn.Parameter]:
        return [p for st in self._label_streams() for p in adapter_parameters(self.text_blocks, st)]

    # --- video side ------------------------------------------------------------------------------------
    def prepare_inputs(self, video: torch.Tensor, captions: Optional[Sequence[Optional[str]]] = None) -> dict:
        """A model-input dict for ``video`` (B, T, 3, H, W): parsing/landmark renders from the face analyzer
        when the model uses them, and the clips' captions (None or "" for a clip without one)."""
        inputs: dict = {"video": video}
        if self.needs_face_analysis:
            inputs |= self.render_mid_level(video)
        if captions is not None:
            inputs |= caption_inputs(captions, len(video), self.clip.context_length)
        return inputs

    def render_mid_level(self, video: torch.Tensor) -> dict:
        """Parsing and landmark renders (B, T, 3, H, W) of model-input frames, normalised like them."""
        from ..video.face_analysis import (
            analyze_clip,
            default_analyzer,
            render_analysis,
        )

        analyzer = self.face_analyzer or default_analyzer()
        x01 = self.input_config.denormalize(video.detach().float().cpu()).clamp(0, 1)
        frames = (x01 * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
        lms, parses = [], []
        for clip in frames:
            analysis = analyze_clip(list(clip), analyzer, self.analysis_cache)
            lm, pa = render_analysis(list(clip), analysis)
            lms.append(np.stack(lm))
            parses.append(np.stack(pa))

        def to_input(arr):
            t = torch.from_numpy(np.stack(arr)).permute(0, 1, 4, 2, 3).float().div_(255)
            return self.input_config.normalize(t).to(video.device, video.dtype)

        return {"landmarks": to_input(lms), "parsing": to_input(parses)}

    def _as_inputs(self, inputs) -> dict:
        if isinstance(inputs, torch.Tensor):
            inputs = {"video": inputs}
        elif not isinstance(inputs, Mapping) or "video" not in inputs:
            raise ValueError("FineCLIPER takes a video tensor (B, T, 3, H, W) or a dict with 'video'")
        video = inputs["video"]
        if video.dim() != 5:
            raise ValueError(f"expected a video tensor (B, T, 3, H, W), got shape {tuple(video.shape)}")
        if self.needs_face_analysis and not {"parsing", "landmarks"} <= set(inputs):
            inputs = dict(inputs) | self.render_mid_level(video)
        return inputs

    def _stream_frames(self, frames: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Frames (N, 3, H, W) of several visual streams through the shared frozen ViT in one routed pass
        -> per-frame features (N, D) of each stream."""
        names = list(frames)
        n = len(frames[names[0]])
        dtype = self.clip.visual.conv1.weight.dtype
        x = torch.cat([frames[k].to(dtype) for k in names])
        with route(*[(k, n) for k in names]):
            feats = self.clip.visual(x)
        return dict(zip(names, feats.split(n)))

    def _pool(self, name: str, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, D) frame features of one stream -> normalised (B, D) stream embedding."""
        pooled = self.temporal(frames) if name == "video" and self.temporal is not None else frames.mean(dim=1)
        return F.normalize(pooled, dim=-1)

    def _encode_visual(self, inputs: dict, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Visual streams of (B, T, 3, H, W) inputs -> normalised (B, D) each."""
        b, t = inputs["video"].shape[:2]
        frames = self._stream_frames({n: inputs[n].flatten(0, 1) for n in names})
        return {n: self._pool(n, f.view(b, t, -1)) for n, f in frames.items()}

    # frame-level API shared with DFER-CLIP (dferclip.predict encodes each distinct frame once)
    @property
    def visual_streams(self) -> tuple:
        return tuple(n for n in self.streams if n in VISUAL_STREAMS)

    def frame_features(self, frames: torch.Tensor, renders: Optional[Mapping[str, torch.Tensor]] = None
                       ) -> dict[str, torch.Tensor]:
        """(U, 3, H, W) model-input frames -> per-frame features (U, D) of each visual stream. ``renders``:
        the frames' parsing/landmark renders (U, 3, H, W) when already made (else the face analyzer runs)."""
        inputs = {"video": frames}
        if self.needs_face_analysis:
            made = renders if renders is not None else {
                k: v.squeeze(0) for k, v in self.render_mid_level(frames.unsqueeze(0)).items()}
            inputs |= {k: made[k] for k in ("parsing", "landmarks")}
        return self._stream_frames({n: inputs[n] for n in self.visual_streams})

    def _sequence_streams(self, features: Mapping[str, torch.Tensor], positions: torch.Tensor):
        n = positions.shape[0]
        feats = {k: self._pool(k, f[positions]) for k, f in features.items()}
        ref = next(iter(feats.values()))
        present = {k: torch.ones(n, dtype=torch.bool, device=ref.device) for k in feats}
        if "caption" in self.streams:  # no caption for these frames: the stream gets weight 0
            feats["caption"] = torch.zeros_like(ref)
            present["caption"] = torch.zeros(n, dtype=torch.bool, device=ref.device)
        return feats, present

    def embed_sequences(self, features: Mapping[str, torch.Tensor], positions: torch.Tensor,
                        return_weights: bool = False):
        """Fused video embeddings (N, D) of N frame sequences given as (N, T) positions into ``features``
        (without captions); with ``return_weights`` also their (N, S) fusion weights (a missing caption: 0)."""
        feats, present = self._sequence_streams(features, positions)
        fused = self._fuse(feats, present)
        return (fused, self._fusion_weights(feats, present)) if return_weights else fused

    def _encode_captions(self, inputs: dict, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) normalised caption embeddings and (B,) presence; every row goes through the adapter so
        all adapter weights take part in each step (DDP), absent rows are masked by the caller."""
        device = self.clip.token_embedding.weight.device
        tokens = inputs.get("caption_tokens")
        if tokens is None:
            tokens = tokenize([""] * batch, self.clip.context_length)
            present = torch.zeros(batch, dtype=torch.bool)
        else:
            present = inputs.get("caption_present")
            if present is None:  # a caption is there when it has a token besides start and end
                present = (tokens != 0).sum(dim=1) > 2
        feats = self._encode_tokens(tokens.to(device), [("caption", batch)])[0]
        return F.normalize(feats, dim=-1), present.to(device=device, dtype=torch.bool)

    def encode_streams(self, inputs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Normalised (B, D) embedding and (B,) presence of each of the model's streams."""
        inputs = self._as_inputs(inputs)
        b = inputs["video"].shape[0]
        visual = [n for n in self.streams if n in VISUAL_STREAMS]
        feats = self._encode_visual(inputs, visual) if visual else {}
        device = inputs["video"].device
        present = {n: torch.ones(b, dtype=torch.bool, device=device) for n in feats}
        if "caption" in self.streams:
            feats["caption"], present["caption"] = self._encode_captions(inputs, b)
        return feats, present

    def _fuse(self, feats: dict, present: dict) -> torch.Tensor:
        f = torch.stack([feats[n] for n in self.streams], dim=1)
        p = torch.stack([present[n] for n in self.streams], dim=1)
        return self.fusion(f, p)

    def encode_video(self, inputs) -> torch.Tensor:
        """Video (B, T, 3, H, W) or an input dict -> fused video embedding (B, D), before normalisation."""
        feats, present = self.encode_streams(inputs)
        return self._fuse(feats, present)

    def _fusion_weights(self, feats: dict, present: dict) -> torch.Tensor:
        return self.fusion.weights(torch.stack([feats[n] for n in self.streams], 1),
                                   torch.stack([present[n] for n in self.streams], 1))

    def stream_weights(self, inputs) -> torch.Tensor:
        """(B, S) fusion weights of :attr:`streams` for these clips."""
        return self._fusion_weights(*self.encode_streams(inputs))

    # --- scoring ---------------------------------------------------------------------------------------
    def positive_negative_scores(self, video_embedding: torch.Tensor, class_embedding: Optional[torch.Tensor] = None
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos(v, pos_c), cos(v, neg_c)), each (B, C) in fp32 even under autocast: the paper's Fig. 3 view."""
        c = self.class_embeddings() if class_embedding is None else class_embedding
        return fp32_cosine_logits(video_embedding, c[:, 0]), fp32_cosine_logits(video_embedding, c[:, 1])

    def score(self, video_embedding: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        """Logits ``scale * (cos(v, pos_c) - negative_weight * cos(v, neg_c))`` for (C, 2, D) class embeddings;
        ``scale * cos(v, c)`` for plain (C, D) ones (zero-shot prompts); fp32 even under autocast."""
        if class_embedding.dim() == 2:
            return fp32_cosine_logits(video_embedding, class_embedding, self.logit_scale)
        pos, neg = self.positive_negative_scores(video_embedding, class_embedding)
        return self.logit_scale * (pos - self.negative_weight * neg)

    def forward(self, inputs) -> torch.Tensor:
        inputs = self._as_inputs(inputs)
        feats, present = self.encode_streams(inputs)
        fused = self._fuse(feats, present)
        classes = self.class_embeddings()
        pos, neg = self.positive_negative_scores(fused, classes)
        if self.training:
            out = FineOutputs(pos, neg, video=F.normalize(fused, dim=-1))
            if self.settings.mode == "zero-shot" or self.settings.align_weight > 0:
                visual_only = {n: p if n in VISUAL_STREAMS else torch.zeros_like(p) for n, p in present.items()}
                out.video = F.normalize(self._fuse(feats, visual_only), dim=-1)
                out.caption, out.caption_present = ((feats["caption"], present["caption"]) if "caption" in feats
                                                    else self._encode_captions(inputs, fused.shape[0]))
            self._last = out
        return self.logit_scale * (pos - self.negative_weight * neg)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of the last training-mode forward (whose ``logits`` are given).

        pn-ce (default): CE(scale * pos, y) + beta * CE(-scale * neg, y) (the clip's own class has the most
        similar positive and the least similar negative descriptor); diff-ce: CE on the returned logits;
        pn-margin: CE(scale * pos, y) + beta * mean(relu(neg_y - pos_y + margin)). Zero-shot mode: symmetric
        InfoNCE between the video-side embedding and the caption embedding (labels unused).
        """
        out, self._last = self._last, None
        if out is None or out.pos.shape != logits.shape:
            raise RuntimeError("FineCLIPER.loss needs the logits of this model's last forward in training mode")
        s = self.settings
        labels = labels.to(logits.device)
        if s.mode == "zero-shot":
            return self._align_loss(out)
        scale = self.logit_scale
        if s.loss == "diff-ce":
            loss = F.cross_entropy(logits.float(), labels)
        elif s.loss == "pn-ce":
            loss = F.cross_entropy(scale * out.pos.float(), labels) + \
                s.negative_loss_weight * F.cross_entropy(-scale * out.neg.float(), labels)
        else:
            pos_y = out.pos.float().gather(1, labels[:, None])
            neg_y = out.neg.float().gather(1, labels[:, None])
            loss = F.cross_entropy(scale * out.pos.float(), labels) + \
                s.negative_loss_weight * F.relu(neg_y - pos_y + s.margin).mean()
        if s.align_weight > 0 and out.caption_present is not None and out.caption_present.any():
            loss = loss + s.align_weight * self._align_loss(out)
        elif s.align_weight > 0 and _in_ddp():
            # No caption in this batch: without a term the caption adapters get no gradient on this process,
            # and DDP (without find_unused_parameters) then waits forever for their bucket or fails the next
            # step, while another process, whose batch has captions, reduces it. A zero-weighted term keeps
            # every trainable parameter in every process's loss each step: the buckets reduce as usual, the
            # captionless process adds zeros to the mean, at the cost of a few small sums; unlike
            # find_unused_parameters, no graph walk every step. One process alone keeps no gradient there.
            loss = loss + 0.0 * sum(p.sum() for p in adapter_parameters(self.text_blocks, "caption"))
        return loss

    def _align_loss(self, out: FineOutputs) -> torch.Tensor:
        keep = out.caption_present
        if keep is None or not keep.any():
            from ..errors import TrainingError

            raise TrainingError("caption alignment needs captions: no clip of this batch has one (see "
                                "dferclip.captions to describe the clips first)")
        logits = fp32_cosine_logits(out.video[keep], out.caption[keep], self.logit_scale)
        target = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))

    # --- zero-shot path on the frozen towers (no adapters) ---------------------------------------------
    def zero_shot_video(self, video) -> torch.Tensor:
        return super().zero_shot_video(video["video"] if isinstance(video, Mapping) else video)

    # --- training helpers ------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The trainable parameters (everything else stays frozen), by optimiser group; empty groups omitted."""
        visual = [p for n in self.streams if n in VISUAL_STREAMS for p in adapter_parameters(self.visual_blocks, n)]
        text = [p for n in self.settings.text_streams for p in adapter_parameters(self.text_blocks, n)]
        groups = {
            "visual_adapters": visual,
            "text_adapters": text,
            "temporal": list(self.temporal.parameters()) if self.temporal is not None else [],
            "fusion": list(self.fusion.parameters()),
        }
        return {k: v for k, v in groups.items() if v}

    def trainable_parameter_count(self) -> dict[str, int]:
        counts = {k: sum(p.numel() for p in v) for k, v in self.param_groups().items()}
        counts["total"] = sum(counts.values())
        return counts

    def wrap_dataset(self, dataset, captions=None, analysis_cache=None):
        """A dataset whose items are ``(input dict, label)`` for this model (see :class:`StreamDataset`)."""
        return StreamDataset(dataset, self, captions=captions, analysis_cache=analysis_cache)


def caption_inputs(captions: Sequence[Optional[str]], batch: int, context_length: int = 77) -> dict:
    if len(captions) != batch:
        raise ValueError(f"{len(captions)} captions for {batch} clips")
    present = torch.tensor([bool(c and c.strip()) for c in captions])
    tokens = tokenize([c if c and c.strip() else "" for c in captions], context_length)
    return {"caption_tokens": tokens, "caption_present": present}


class StreamDataset(torch.utils.data.Dataset):
    """Wraps a :class:`dferclip.data.ClipDataset` so each item carries every stream of a FineCLIPER model:
    ``({"video", "landmarks", "parsing", "caption_tokens", "caption_present"}, label)``.

    Face analysis runs on the clip's original frames (cached per clip on disk when ``analysis_cache`` is
    given); the renders then go through the dataset's own ``transform`` for that item, so they get the same
    crop, flip and rotation as the video frames. Captions come from a :class:`dferclip.captions.CaptionStore`
    keyed by the clip's content hash (:func:`dferclip.captions.clip_key`); clips without one are counted in
    :attr:`missing_captions` and go without the caption stream.
    """

    def __init__(self, base, model: FineCLIPER, *, captions=None, analysis_cache=None):
        self.base = base
        self.needs_mid = model.needs_face_analysis
        self.uses_captions = model.uses_captions
        self.context_length = model.clip.context_length
        self.analyzer = model.face_analyzer
        self.analysis_cache = analysis_cache if analysis_cache is not None else model.analysis_cache
        self.captions = captions
        self._keys: dict[int, str] = {}
        self.missing_captions: list[str] = []
        if self.uses_captions:
            if captions is None:
                log.warning("this FineCLIPER model uses captions and none were given: the caption stream is off")
            else:
                self.missing_captions = [r.path for i, r in enumerate(base.records) if captions.text(self.key(i)) is None]
                if self.missing_captions:
                    log.warning("%d of %d clips have no caption (first: %s)", len(self.missing_captions),
                                len(base.records), self.missing_captions[0])

    def key(self, index: int) -> str:
        from ..video.clips import clip_key

        if index not in self._keys:
            self._keys[index] = clip_key(self.base.records[index].path)
        return self._keys[index]

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name):  # labels, records, set_epoch, input_config, report, ... of the base set
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, index: int):
        from ..video.face_analysis import (
            analyze_clip,
            default_analyzer,
            render_analysis,
        )

        frames = self.base.load_frames(index)
        item: dict = {"video": self.base.transform(index, frames)}
        if self.needs_mid:
            arrays = [np.asarray(f, dtype=np.uint8) for f in frames]
            analysis = analyze_clip(arrays, self.analyzer or default_analyzer(), self.analysis_cache)
            from PIL import Image

            lms, parses = render_analysis(arrays, analysis)
            item["landmarks"] = self.base.transform(index, [Image.fromarray(a) for a in lms])
            item["parsing"] = self.base.transform(index, [Image.fromarray(a) for a in parses])
        if self.uses_captions:
            text = self.captions.text(self.key(index)) if self.captions is not None else None
            item |= {k: v[0] for k, v in caption_inputs([text], 1, self.context_length).items()}
        return item, self.base.records[index].label


def fineclipper_config(variant: str = "full", base: str = "fineclipper-vit-b-16", **settings) -> ModelConfig:
    """A FineCLIPER config for one of the paper's variants (:data:`VARIANTS`) with settings overridden."""
    from ..config import get_config

    cfg = get_config(base)
    extra = {k: v for k, v in cfg.extra.items() if k not in ("variant", "streams")}
    extra |= {"streams": list(VARIANTS[variant])} | settings
    FineSettings.from_extra(extra)
    return cfg.replace(extra=extra)
