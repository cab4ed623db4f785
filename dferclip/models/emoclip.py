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

Training (``train.py`` and ``experiments/*_hpc.sh`` of the official code; here ``training/configs/emoclip.json``
through :mod:`dferclip.training.train`):

- Objective: symmetric InfoNCE over the batch between video embeddings and the text embeddings of each clip's
  own description, mean of the video->text and text->video cross-entropies, ``logit_scale.exp()`` times the
  cosine. The official loaders give each MAFW training clip its sample-level caption (annotation column 4);
  here a clip's caption comes from a caption file of the ``caption`` command (``captions`` in the training
  config, read as FineCLIPER's training reads it) and a clip without one is paired with its class
  description, the class embedding that zero-shot evaluation scores against (the mean over the class's
  sentences).
- Trained: the temporal transformer and the logit scale; CLIP is frozen (``VClip`` sets ``requires_grad``
  False on the whole backbone). The fine-tuning runs (``--finetune --visual --text``) unfreeze the image
  tower and the text transformer at 1/1000 of the rate: the groups ``image_encoder`` and ``text_encoder``
  here, frozen when their rate is 0 (the default recipe).
- Optimiser: SGD, momentum 0.9, weight decay 5e-4, rate 1e-3; 30 epochs, MultiStepLR at 15 (its 35 and 50
  lie past the end), gamma 0.1; 2 GPUs x 64 clips; fp16 autocast; augmentation: rotation up to 6 degrees and
  a horizontal flip.
- Differences: (1) the official loss puts one target per row (``arange``), so clips of a batch whose texts
  are the same (two clips of one class without captions) count as each other's negatives; here every clip
  with the same text (same caption tokens, or no caption and the same class) is a positive, the targets
  spread over them; with all texts distinct this is the official loss. (2) The official loss is per GPU
  over its 64 clips; here the embeddings are gathered over the processes (with gradients), so the loss is
  over the global batch and any number of processes trains the same model. (3) Model selection is on a
  validation split by default (the official keeps the best test WAR: ``selection="test"``). (4) Training
  frames come from the trainer's segment sampling (DFER-CLIP's), not a random window.

There are no learned prompts: ``has_learned_prompts`` is False, and the scoring modes ``zero-shot`` and
the model's own path are the same computation (:meth:`zero_shot_video` is the temporal video embedding and
:meth:`zero_shot_texts` the bare sentences), so EmoCLIP's zero-shot scores are never plain CLIP's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..text.descriptions import DescriptionSet
from .blocks import ModelFacts, TemporalTransformer, class_means, fp32_cosine_logits
from .clip_towers import build_clip
from .fineclipper import _in_ddp, caption_inputs
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


@dataclass
class _TrainStep:
    """What a training-mode forward keeps for :meth:`EmoCLIP.loss`."""

    video: torch.Tensor  # (B, D) normalised video embeddings
    classes: torch.Tensor  # (C, D) normalised class embeddings
    captions: Optional[torch.Tensor] = None  # (B, D) normalised caption embeddings
    present: Optional[torch.Tensor] = None  # (B,) bool: the clip has a caption
    tokens: Optional[torch.Tensor] = None  # (B, L) caption tokens


def _gather(x: torch.Tensor, with_grad: bool = False) -> torch.Tensor:
    """The rows of every process, in rank order (gradients flow back to each process's own rows)."""
    import torch.distributed as dist

    if with_grad:
        import torch.distributed.nn.functional as dist_fn

        return torch.cat(dist_fn.all_gather(x.contiguous()))
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def same_text(labels: torch.Tensor, present: Optional[torch.Tensor] = None,
              tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, B) bool: clips i and j have the same text (the same caption, or no caption and the same class)."""
    key = labels[:, None]
    if present is not None and tokens is not None:
        caption_key = torch.cat([torch.ones_like(key), tokens], dim=1)
        class_key = torch.cat([torch.zeros_like(key), key, torch.zeros_like(tokens[:, 1:])], dim=1)
        key = torch.where(present[:, None], caption_key, class_key)
    return (key[:, None, :] == key[None, :, :]).all(-1)


def contrastive_loss(video: torch.Tensor, text: torch.Tensor, same: torch.Tensor, scale: torch.Tensor):
    """Symmetric InfoNCE of normalised (B, D) pairs; a row's targets spread over the clips with its text."""
    logits = scale * video.float() @ text.float().t()
    targets = same.float() / same.float().sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


class CaptionedClips(torch.utils.data.Dataset):
    """Training clips with their captions: items ``({"video", "caption_tokens", "caption_present"}, label)``;
    captions from a :class:`dferclip.captions.CaptionStore` keyed by :func:`dferclip.captions.clip_key`."""

    uses_captions = True  # counted by the trainer's caption report

    def __init__(self, base, captions, context_length: int = 77):
        from ..video.clips import clip_key

        self.base, self.captions, self.context_length = base, captions, context_length
        self.keys = [clip_key(r.path) for r in base.records]
        self.missing_captions = [r.path for r, k in zip(base.records, self.keys) if captions.text(k) is None]

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name):  # labels, records, set_epoch, train, ... of the base set
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, index: int):
        video, label = self.base[index]
        caption = caption_inputs([self.captions.text(self.keys[index])], 1, self.context_length)
        return {"video": video, **{k: v[0] for k, v in caption.items()}}, label


@register_model("emoclip")
class EmoCLIP(ModelFacts, nn.Module):
    family = "emoclip"
    has_learned_prompts = False  # zero-shot by class descriptions only (no "learned" scoring mode)
    official_descriptions = "emoclip-official"  # emoclip-official-dfew / -mafw
    trains_on_captions = True  # training pairs a clip with its caption (else its class description)

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
        self._last: Optional[_TrainStep] = None
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
    def zero_shot_video(self, video: torch.Tensor) -> torch.Tensor:
        """EmoCLIP's zero-shot video embedding is its own (B, D), L2-normalised: not CLIP's frame average."""
        return F.normalize(self.encode_video(video), dim=-1)

    def score(self, video_embedding: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) ``exp(log_logit_scale) * cos(v, c)``, in fp32 even under autocast."""
        return fp32_cosine_logits(video_embedding, class_embedding, self.log_logit_scale.float().exp())

    def forward(self, inputs) -> torch.Tensor:
        """Logits (B, C) against the class embeddings. ``inputs``: a video tensor, or in training a dict with
        ``video`` and the clips' ``caption_tokens`` / ``caption_present`` (:class:`CaptionedClips`)."""
        video = self.encode_video(inputs)
        classes = self.class_embeddings()
        if self.training:
            step = _TrainStep(F.normalize(video.float(), dim=-1), classes)
            tokens = inputs.get("caption_tokens") if isinstance(inputs, Mapping) else None
            if tokens is not None:  # every row through the text tower (fixed shapes for the gather)
                step.tokens = tokens.to(video.device)
                step.present = inputs["caption_present"].to(video.device)
                step.captions = self.encode_texts_from_tokens(step.tokens)
            self._last = step
        return self.score(video, classes)

    def encode_texts_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (N, L) -> normalised CLIP text features (N, D)."""
        from .clip_towers import encode_token_embeddings

        return F.normalize(encode_token_embeddings(self.clip, self.clip.token_embedding(tokens), tokens), dim=-1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The contrastive loss of the last training-mode forward (whose ``logits`` are given): each clip's
        video embedding against the text of its caption, or of its class without one (module docstring)."""
        step, self._last = self._last, None
        if step is None or step.video.shape[0] != logits.shape[0]:
            raise RuntimeError("EmoCLIP.loss needs the logits of this model's last forward in training mode")
        labels = labels.to(logits.device)
        text = step.classes.float()[labels]
        if step.captions is not None:
            text = torch.where(step.present[:, None], step.captions.float(), text)
        video, present, tokens = step.video, step.present, step.tokens
        if _in_ddp():  # the loss over the global batch
            video, text, labels = _gather(video, True), _gather(text, True), _gather(labels)
            if tokens is not None:
                present, tokens = _gather(present), _gather(tokens)
        return contrastive_loss(video, text, same_text(labels, present, tokens), self.log_logit_scale.float().exp())

    def wrap_dataset(self, dataset, captions=None, analysis_cache=None):
        """Training clips with a caption store become :class:`CaptionedClips`; anything else is unchanged
        (evaluation is zero-shot by the class descriptions)."""
        if captions is None or not getattr(dataset, "train", False):
            return dataset
        return CaptionedClips(dataset, captions, self.clip.context_length)

    # --- training helpers ----------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The official training's trained parts (temporal net with the logit scale) and what its fine-tuning
        runs unfreeze: the image tower and the text transformer (token embedding, ln_final and projection stay
        frozen). A group with rate 0 stays frozen (:func:`dferclip.training.train.trainable_groups`)."""
        return {
            "temporal": list(self.temporal.parameters()) + [self.log_logit_scale],
            "image_encoder": list(self.clip.visual.parameters()),
            "text_encoder": list(self.clip.transformer.parameters()),
        }
