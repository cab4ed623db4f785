"""Embedding caches and description scoring: zero-shot and learned prompts, several descriptors per class.

A video's embedding does not depend on the text and a description's embedding does not depend on the video,
so both are cached and a score is one matrix product:

- video embeddings: per (model fingerprint, clip content hash), both the learned-path one (``encode_video``) and
  the zero-shot one (``zero_shot_video``); bounded LRU in memory, optionally on disk (safetensors);
- text embeddings: per (model fingerprint, "zero-shot", prompt text) and, because DFER-CLIP's contexts are
  class-specific, per (model fingerprint, "learned", class index, description); bounded LRU. Editing one
  description re-encodes only that description's texts. Models with positive and negative descriptors
  (FineCLIPER, :func:`has_pn_descriptors`) also cache negative features per (model fingerprint, "learned-neg",
  class index, negative text): the negative text is the description written into the model's negative
  template, so a class's negatives that read the same (the label negative "... of no {name}") are encoded once.

Combining several descriptors of a class (``combine``):

- ``mean-embedding``: class embedding = normalise(sum of descriptor embeddings), as CLIP/CuPL ensembling and
  ``DFERCLIP.encode_classes``; descriptor i contributes ``scale * v.d_i / |sum d|``;
- ``mean-similarity``: class score = mean of descriptor similarities (classification by description);
  descriptor i contributes ``scale * cos(v, d_i) / |D|``;
- ``max``: class score = the best descriptor's similarity, which contributes all of it.

In every mode the contributions of a class add up exactly to its logit.

Positive/negative (PN) models, learned mode: the combine mode is applied to the positive descriptors and to
the negative ones alike, giving per class the cosines ``pos_c`` and ``neg_c``; the logit is
``scale * (pos_c - negative_weight * neg_c)`` as ``FineCLIPER.score``. The descriptors' contributions split
``scale * pos_c`` as above, and the class's negative term ``-scale * negative_weight * neg_c`` is
``Scores.negative_contributions[:, c]``; together they add up exactly to the logit.

Model identity (:func:`model_fingerprint`): SHA-256 over the config (architecture and input normalisation),
``weights_info`` and a strided sample (<= 64 values) of every parameter with its name, shape and dtype. It is
memoised per model object and recomputed when any parameter's in-place version counter moves (an optimiser
step), so it is cheap to call. Cache keys use :func:`encoding_key`: the fingerprint plus the device and the
autocast precision the embeddings are computed under, since those change the numbers too.

Devices: cached embeddings are float32 on the CPU, whatever device the model runs on, and every scoring
tensor is made on the device of the video embeddings it scores, so nothing mixes devices.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Optional, Sequence

import torch
import torch.nn.functional as F

from . import pacing, zero_gpu
from .text.descriptions import DescriptionSet

log = logging.getLogger(__name__)

COMBINE_MODES = ("mean-embedding", "mean-similarity", "max")
SCORE_MODES = ("zero-shot", "learned")
_SAMPLES_PER_TENSOR = 64


# --- identities ------------------------------------------------------------------------------------
_fingerprints: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _param_versions(model: torch.nn.Module) -> tuple:
    return tuple(p._version for p in model.parameters())


def model_fingerprint(model: torch.nn.Module) -> str:
    """A content fingerprint of the model's weights (see the module docstring), memoised."""
    versions = _param_versions(model)
    known = _fingerprints.get(model)
    if known is not None and known[0] == versions:
        return known[1]
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    h.update(json.dumps(config.to_dict() if config is not None else None, sort_keys=True, default=str).encode())
    h.update(json.dumps(getattr(model, "weights_info", {}), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
            h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
            h.update(flat[::step].to("cpu", torch.float32).numpy().tobytes())
    digest = h.hexdigest()[:24]
    _fingerprints[model] = (versions, digest)
    return digest


def encoding_key(model: torch.nn.Module) -> str:
    """What a cached embedding depends on: the model's fingerprint, its device and the autocast dtype in force."""
    dev = next(model.parameters()).device
    autocast = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else None
    return f"{model_fingerprint(model)}|{dev}|{autocast}"


def tensor_digest(t: torch.Tensor) -> str:
    """Content hash of a tensor (a clip's model input)."""
    a = t.detach().to("cpu").contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(a.shape)}{a.dtype}".encode())
    h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- a bounded cache ---------------------------------------------------------------------------------
class LRUCache:
    """A dict with a size bound: the least recently used entries go first."""

    def __init__(self, maxsize: int):
        self.maxsize = int(maxsize)
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()  # the app shares caches between concurrent events
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __contains__(self, key) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


# --- positive/negative descriptors ---------------------------------------------------------------------
def has_pn_descriptors(model) -> bool:
    """Whether the model scores a class by a positive and a negative descriptor (FineCLIPER)."""
    return model.has_negative_prompts


def negative_texts(model, texts: Sequence[str], class_index: Sequence[int]) -> list[str]:
    """The negative descriptor texts a PN model writes these descriptions into (its negative template)."""
    return model.descriptor_prompts(texts, class_index, negative=True)


# --- text embeddings ---------------------------------------------------------------------------------
def _text_seconds(texts, *args, **kwargs) -> float:
    return 5 + 0.01 * len(texts)


@zero_gpu.estimate(_text_seconds)
def encode_prompts(model, texts: list[str], class_index: list[int], negative: bool = False) -> torch.Tensor:
    """Learned-prompt features (P, D) of descriptions in their classes' context, L2-normalised, float32 on the
    CPU (a GPU function's result on ZeroGPU)."""
    with torch.no_grad():
        kw = {"negative": True} if negative else {}
        return F.normalize(model.encode_prompts(texts, class_index, **kw), dim=-1).float().cpu()


@zero_gpu.estimate(_text_seconds)
def encode_texts(model, texts: list[str]) -> torch.Tensor:
    """Plain CLIP text features (N, D) as the model normalises them, float32 on the CPU."""
    with torch.no_grad():
        return model.encode_texts(texts).float().cpu()


class Tally:
    """How many texts one caller's lookups encoded (the shared cache's own counter counts everyone's)."""

    def __init__(self):
        self.encoded = 0


TEXT_CHUNK = 64  # texts a text-tower call: one piece of a long re-score


class TextEmbeddingCache:
    """Normalised text features per (model, mode, [class,] text); only unseen texts are encoded.

    ``encoded`` counts the texts run through the text tower by all users of the cache; a caller that wants
    its own count passes a :class:`Tally`. Features are stored as float32 on the CPU.
    """

    def __init__(self, maxsize: int = 50_000):
        self._cache = LRUCache(maxsize)
        self.encoded = 0

    def learned(self, model, texts: Sequence[str], class_index: Sequence[int], tally: Optional[Tally] = None
                ) -> torch.Tensor:
        """Learned-prompt features (P, D), L2-normalised, for descriptions with their class's context
        (for a PN model: the positive descriptors)."""
        fp = encoding_key(model)
        keys = [(fp, "learned", int(c), t) for t, c in zip(texts, class_index)]

        def encode(idx):
            return zero_gpu.run(model, encode_prompts, [texts[i] for i in idx], [class_index[i] for i in idx])

        return self._lookup(keys, encode, tally)

    def learned_negative(self, model, texts: Sequence[str], class_index: Sequence[int],
                         tally: Optional[Tally] = None) -> torch.Tensor:
        """A PN model's negative descriptor features (P, D), L2-normalised, one per description; keyed by the
        negative text, so descriptions whose negatives read the same share one encoding."""
        fp = encoding_key(model)
        keys = [(fp, "learned-neg", int(c), n) for n, c in zip(negative_texts(model, texts, class_index), class_index)]

        def encode(idx):
            return zero_gpu.run(model, encode_prompts, [texts[i] for i in idx], [class_index[i] for i in idx],
                                negative=True)

        return self._lookup(keys, encode, tally)

    def zero_shot(self, model, texts: Sequence[str], tally: Optional[Tally] = None) -> torch.Tensor:
        """Plain CLIP text features (N, D), L2-normalised."""
        fp = encoding_key(model)
        keys = [(fp, "zero-shot", t) for t in texts]
        return self._lookup(keys, lambda idx: zero_gpu.run(model, encode_texts, [texts[i] for i in idx]), tally)

    def _lookup(self, keys: list, encode, tally: Optional[Tally] = None) -> torch.Tensor:
        found = [self._cache.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        first: dict = {}  # a text may appear twice in one call: encode it once
        for i in missing:
            first.setdefault(keys[i], i)
        unique, idx = list(first), list(first.values())
        if unique:
            parts = []
            for at in range(0, len(idx), TEXT_CHUNK):  # pieces a server can pause between (dferclip.pacing)
                if at:
                    pacing.checkpoint()
                with torch.no_grad():
                    parts.append(encode(idx[at : at + TEXT_CHUNK]).detach().float().cpu())
            feats = torch.cat(parts)
            self.encoded += len(idx)
            if tally is not None:
                tally.encoded += len(idx)
            for k, f in zip(unique, feats):
                self._cache.put(k, f)
            fresh = dict(zip(unique, feats))
            found = [f if f is not None else fresh[k] for f, k in zip(found, keys)]
        if not found:
            raise ValueError("no texts to encode")
        return torch.stack(found)

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()


# --- video embeddings --------------------------------------------------------------------------------
@dataclass
class VideoEmbedding:
    """One clip's two embeddings, both L2-normalised (D,)."""

    learned: torch.Tensor
    zero_shot: torch.Tensor

    def for_mode(self, mode: str) -> torch.Tensor:
        return self.learned if mode == "learned" else self.zero_shot


def _embedding_problem(emb: VideoEmbedding) -> Optional[str]:
    """What is wrong with an embedding read back from disk (shapes, non-finite values, not unit length)."""
    a, b = emb.learned, emb.zero_shot
    if a.dim() != 1 or b.dim() != 1 or a.dtype != torch.float32 or b.dtype != torch.float32:
        return f"shapes {tuple(a.shape)} {tuple(b.shape)} / {a.dtype}, not two float32 vectors"
    for t in (a, b):
        if not torch.isfinite(t).all() or abs(float(t.norm()) - 1.0) > 1e-3:
            return "values that are not a unit vector (damaged)"
    return None


def encode_clip(model, video: torch.Tensor) -> VideoEmbedding:
    """Both embeddings of a (1, T, 3, H, W) or (T, 3, H, W) model-input tensor, as float32 on the CPU (in a GPU
    slot on ZeroGPU)."""
    return zero_gpu.run(model, _encode_clip, video)


@zero_gpu.estimate(lambda video: 5 + 0.05 * video.shape[-4])
def _encode_clip(model, video: torch.Tensor) -> VideoEmbedding:
    if video.dim() == 4:
        video = video.unsqueeze(0)
    device = next(model.parameters()).device
    with torch.no_grad():
        video = zero_gpu.place(video, device)
        learned = F.normalize(model.encode_video(video).float(), dim=-1)[0].cpu()
        if not model.has_learned_prompts:  # EmoCLIP: its zero-shot video embedding is this one, not encoded twice
            return VideoEmbedding(learned, learned)
        zero_shot = model.zero_shot_video(video).float()[0].cpu()  # scoring happens where these live
    return VideoEmbedding(learned, zero_shot)


class VideoEmbeddingCache:
    """Clip embeddings per (model fingerprint, clip key); bounded; optionally mirrored on disk.

    The clip key is the tensor's content hash, or a caller's key (e.g. file hash + ingestion settings).
    Disk entries are safetensors files ``<folder>/<sha>.safetensors`` named by a hash of the full key; the
    folder holds at most ``max_bytes`` (least recently used files are deleted first).
    """

    def __init__(self, maxsize: int = 4096, folder: Optional[str | Path] = None, max_bytes: int = 256 << 20):
        self._cache = LRUCache(maxsize)
        self.folder = Path(folder) if folder else None
        self.max_bytes = int(max_bytes)
        self.encoded = 0
        self._disk_lock = threading.Lock()
        self._disk_bytes: Optional[int] = None  # known total, measured on the first write

    def get(self, model, video: Optional[torch.Tensor] = None, key: Optional[str] = None,
            load_video=None) -> VideoEmbedding:
        """The clip's embeddings; ``video`` (or ``load_video()`` when ``video`` is None) is encoded on a miss."""
        if key is None:
            if video is None:
                raise ValueError("give a video tensor or a key")
            key = tensor_digest(video)
        full = (encoding_key(model), key)
        hit = self._cache.get(full)
        if hit is not None:
            return hit
        emb = self._read_disk(full)
        if emb is None:
            if video is None:
                if load_video is None:
                    raise ValueError("clip not cached and no video given")
                video = load_video()
            emb = encode_clip(model, video)
            self.encoded += 1
            self._write_disk(full, emb)
        self._cache.put(full, emb)
        return emb

    def _disk_path(self, full: tuple) -> Optional[Path]:
        if self.folder is None:
            return None
        name = hashlib.sha256(json.dumps(list(full)).encode()).hexdigest()[:32]
        return self.folder / f"{name}.safetensors"

    def _read_disk(self, full: tuple) -> Optional[VideoEmbedding]:
        path = self._disk_path(full)
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            t = load_file(str(path))
            emb = VideoEmbedding(t["learned"], t["zero_shot"])
            problem = _embedding_problem(emb)
            if problem:
                raise ValueError(problem)
            os.utime(path)  # recently used: evicted last
            return emb
        except (SafetensorError, OSError, KeyError, ValueError) as e:
            log.warning("deleting an unreadable embedding cache entry %s (%s); the clip is encoded again",
                        path.name, e)
            path.unlink(missing_ok=True)
            with self._disk_lock:
                self._disk_bytes = None  # measured again on the next write
            return None

    def _write_disk(self, full: tuple, emb: VideoEmbedding) -> None:
        path = self._disk_path(full)
        if path is None:
            return
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        from .files import atomic_write_with

        # copies: a model without learned prompts (EmoCLIP) has one tensor for both, which safetensors refuses
        tensors = {"learned": emb.learned.clone().contiguous(), "zero_shot": emb.zero_shot.clone().contiguous()}
        try:
            atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata={"model": full[0],
                                                                                  "clip": str(full[1])}))
            self._account(path.stat().st_size)
        except (OSError, SafetensorError) as e:  # a full disk costs the cache entry, never the answer
            log.warning("embedding cache: cannot write %s (%s); serving from memory", path.name, e)

    def _account(self, added: int) -> None:
        """Keep the folder under ``max_bytes``: past it, delete least recently used entries down to 90 %."""
        with self._disk_lock:
            if self._disk_bytes is None:
                self._disk_bytes = sum(e.stat().st_size for e in os.scandir(self.folder)
                                       if e.name.endswith(".safetensors"))
            else:
                self._disk_bytes += added
            if self._disk_bytes <= self.max_bytes:
                return
            entries = sorted((e.stat().st_mtime, e.stat().st_size, e.path) for e in os.scandir(self.folder)
                             if e.name.endswith(".safetensors"))
            total = sum(size for _, size, _ in entries)
            for _, size, path in entries:
                if total <= 0.9 * self.max_bytes:
                    break
                Path(path).unlink(missing_ok=True)
                total -= size
            self._disk_bytes = total

    def disk_bytes(self) -> int:
        if self.folder is None or not self.folder.is_dir():
            return 0
        return sum(e.stat().st_size for e in os.scandir(self.folder) if e.name.endswith(".safetensors"))

    def __len__(self) -> int:
        return len(self._cache)


# --- scoring -----------------------------------------------------------------------------------------
@dataclass
class Scores:
    """Scores of N clips against C classes, with per-descriptor detail.

    ``logits`` (N, C); ``similarities[c]`` (N, P_c): ``scale * cos(video, descriptor)``;
    ``contributions[c]`` (N, P_c): the descriptor's share of the logit (they add up to ``logits[:, c]``).

    PN models in learned mode (None otherwise): ``positive`` / ``negative`` (N, C) the combined cosines
    ``pos_c`` / ``neg_c`` (``similarities`` and ``contributions`` are then those of the positive
    descriptors); ``negative_contributions`` (N, C) the class's negative term ``-scale * negative_weight *
    neg_c``, so that ``contributions[c].sum(1) + negative_contributions[:, c] == logits[:, c]``.
    """

    mode: str
    combine: str
    logits: torch.Tensor
    similarities: list
    contributions: list
    positive: Optional[torch.Tensor] = None
    negative: Optional[torch.Tensor] = None
    negative_contributions: Optional[torch.Tensor] = None
    negative_weight: Optional[float] = None

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.softmax(dim=-1)

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=-1)


def combine_descriptors(v: torch.Tensor, feats: torch.Tensor, index: torch.Tensor, counts: Sequence[int],
                        combine: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class cosines (N, C) from descriptor features (P, D) of classes ``index``; also each descriptor's
    cosine (N, P) and its share of its class's cosine (N, P; the shares of a class add up to its cosine)."""
    dev = v.device  # every tensor below lives where the video embeddings do
    feats, index = feats.to(dev, v.dtype), index.to(dev)
    cos = v @ F.normalize(feats, dim=-1).t()
    if combine == "mean-embedding":
        summed = torch.zeros(len(counts), feats.shape[1], dtype=feats.dtype, device=dev).index_add_(0, index, feats)
        norms = summed.norm(dim=-1)
        share = (v @ feats.t()) / norms[index]
        classes = v @ (summed / norms[:, None]).t()
    elif combine == "mean-similarity":
        share = cos / torch.as_tensor(counts, dtype=v.dtype, device=dev)[index]
        classes = torch.zeros(v.shape[0], len(counts), dtype=v.dtype, device=dev).index_add_(1, index, share)
    elif combine == "max":
        per_class = cos.split(list(counts), dim=1)
        classes = torch.stack([c.max(dim=1).values for c in per_class], dim=1)
        share = torch.cat([c * F.one_hot(c.argmax(dim=1), c.shape[1]).to(c.dtype) for c in per_class], dim=1)
    else:
        raise ValueError(f"unknown combine mode {combine!r}; use one of {COMBINE_MODES}")
    return classes, cos, share


class Scorer:
    """Scores description sets against cached video embeddings, re-encoding only changed texts."""

    def __init__(self, model, text_cache: Optional[TextEmbeddingCache] = None,
                 templates: Optional[Sequence[str]] = None):
        self.model = model
        self.text_cache = text_cache if text_cache is not None else TextEmbeddingCache()
        self.templates = tuple(templates) if templates else tuple(model.config.zero_shot_templates)
        self.tally = Tally()  # texts this scorer had encoded (the shared cache counts everyone's)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale)

    @property
    def has_pn(self) -> bool:
        return has_pn_descriptors(self.model)

    def _check_learned(self, ds: DescriptionSet) -> None:
        if ds.num_classes != self.model.num_classes:
            from .errors import DescriptionError

            raise DescriptionError(
                f"learned prompts need the model's {self.model.num_classes} classes; the set has {ds.num_classes}"
            )

    def descriptor_features(self, ds: DescriptionSet, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, D) one feature per descriptor, and its class index (P,).

        Learned: the normalised learned-prompt feature (a PN model's positive descriptor). Zero-shot: the mean
        of the descriptor's normalised template features (not re-normalised, so summing them gives CLIP's
        prompt ensemble exactly).
        """
        index = torch.as_tensor([c for c, descs in enumerate(ds.descriptions) for _ in descs], device="cpu")
        flat = [d for descs in ds.descriptions for d in descs]
        if mode == "learned":
            self._check_learned(ds)
            return self.text_cache.learned(self.model, flat, index.tolist(), self.tally), index
        if mode != "zero-shot":
            raise ValueError(f"unknown scoring mode {mode!r}; use one of {SCORE_MODES}")
        texts, _ = self.model.zero_shot_texts(ds, self.templates)
        feats = self.text_cache.zero_shot(self.model, texts, self.tally)
        return feats.view(len(flat), len(self.templates), -1).mean(dim=1), index

    def negative_features(self, ds: DescriptionSet) -> torch.Tensor:
        """A PN model's (P, D) normalised negative descriptor features, one per descriptor of ``ds``."""
        self._check_learned(ds)
        index = [c for c, descs in enumerate(ds.descriptions) for _ in descs]
        return self.text_cache.learned_negative(self.model, [d for descs in ds.descriptions for d in descs], index,
                                                self.tally)

    def negative_texts(self, ds: DescriptionSet) -> list[list[str]]:
        """Per class, the distinct negative descriptor texts of a PN model for ``ds``."""
        out = []
        for c, descs in enumerate(ds.descriptions):
            out.append(list(dict.fromkeys(negative_texts(self.model, descs, [c] * len(descs)))))
        return out

    def score(self, video: torch.Tensor, ds: DescriptionSet, mode: str = "learned",
              combine: str = "mean-embedding") -> Scores:
        """``video``: (N, D) or (D,) L2-normalised embeddings of the same mode."""
        if combine not in COMBINE_MODES:
            raise ValueError(f"unknown combine mode {combine!r}; use one of {COMBINE_MODES}")
        v = video.unsqueeze(0) if video.dim() == 1 else video
        feats, index = self.descriptor_features(ds, mode)
        scale = self.logit_scale
        counts = [len(d) for d in ds.descriptions]
        classes, cos, share = combine_descriptors(v, feats.to(v.dtype), index, counts, combine)
        sims, contrib = list((scale * cos).split(counts, dim=1)), list((scale * share).split(counts, dim=1))
        if mode != "learned" or not self.has_pn:
            return Scores(mode, combine, scale * classes, sims, contrib)
        neg, _, _ = combine_descriptors(v, self.negative_features(ds).to(v.dtype), index, counts, combine)
        weight = float(self.model.negative_weight)
        negative_contrib = -scale * weight * neg
        logits = scale * classes + negative_contrib
        return Scores(mode, combine, logits, sims, contrib, positive=classes, negative=neg,
                      negative_contributions=negative_contrib, negative_weight=weight)
