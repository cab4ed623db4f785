"""Why this expression: where (face regions) and when (frames) a clip matched a text, for both model families.

    from dferclip.explain import explain_clip, overlay

    ex = explain_clip(model, video)                                   # the predicted class, versus neutral
    ex = explain_clip(model, video, class_index="happiness")          # a class's own embedding
    ex = explain_clip(model, video, class_index="happiness", versus=None)    # its raw logit, not a contrast
    ex = explain_clip(model, video, text="raised cheeks", class_index="happiness")   # a descriptor of a class
    ex = explain_clip(model, video, text="raised cheeks")             # plain CLIP text embedding
    ex = explain_clip(model, video, text=embedding)                   # any (D,) text embedding
    ex.maps["video"]            # (T, H, W) in [0, 1]: relevancy over each face crop, per visual stream
    ex.frame_relevancy          # (T,) each frame's share (sums to 1): temporal class-token relevancy
    ex.frame_occlusion          # (T,) drop of ex.score when the frame is replaced by its neighbours
    overlay(crop, ex.maps["video"][t])                                # heat map over a crop (uint8 RGB)

**The score explained** is the model's own logit for the target: ``logit_scale * cos(v, text)`` with ``v`` the
model's video embedding (image tower per frame, temporal transformer; FineCLIPER: its adapted streams, fused);
for a class of a positive/negative model (FineCLIPER) ``logit_scale * (cos(v, pos) - lambda * cos(v, neg))``;
by default minus the logit of a contrast class (``versus``): "why this expression rather than a neutral face".
A raw logit also rewards what every class shares (a face, a relaxed mouth for a brow class), so its map shows
the face; the contrast keeps what tells the target apart (see :func:`resolve_versus`).

**Where** (Chefer, Gur & Wolf, ICCV 2021, gradient-weighted attention rollout): per image, a relevancy matrix
over tokens starts at the identity; for each ViT block in order, ``R += mean_heads(max(0, dA * A)) @ R`` with
``A`` the block's attention probabilities and ``dA`` the score's gradient with respect to them. The class
token's row over the patch tokens, upsampled to the crop, is the map; each stream's maps are divided by their
largest value over the clip (a faint frame stays faint).

**When**: the same rollout over the temporal transformer's blocks gives the class token's relevancy to each
frame (for mean-pooled streams, gradient x input of each frame's feature, i.e. the rollout of a uniform
attention), as shares summing to 1 (multi-stream models: weighted by the clip's fusion weights). As a check,
each frame is replaced by its left and by its right neighbour (the frame features are swapped, so only the
cheap temporal part re-runs) and the mean drop of the explained score is reported.

Attention probabilities are tapped with hooks installed once per model and active only inside
:func:`explain_clip`'s context (a ``ContextVar``, so other threads' forwards are untouched): open_clip's
``nn.MultiheadAttention`` is asked for per-head weights (``need_weights=True, average_attn_weights=False``,
the same softmax it multiplies the values by) and the temporal attention keeps its probabilities
(``TemporalAttention.weights_sink``); the logit equals the plain forward's (``tests/test_explain.py``). One
forward and one backward (input gradients only) plus 2T temporal passes: about 2x a forward (``benchmarks/bench_explain.py``).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import DferclipError
from .models.blocks import TemporalAttention


class ExplainError(DferclipError):
    """The explanation cannot be made (unknown class, unsupported model, bad input)."""


@dataclass
class Explanation:
    """Where and when one clip matched one target (see the module docstring)."""

    target: str  # what was explained, in words: 'class "happiness"', 'text "raised cheeks" (class happiness)'
    score: float  # the explained score: the target's logit minus the contrast's (the logit itself if none)
    maps: dict[str, np.ndarray]  # visual stream -> (T, H, W) float32 in [0, 1]
    frame_relevancy: np.ndarray  # (T,) shares summing to 1 (all zero when nothing is relevant)
    frame_occlusion: np.ndarray  # (T,) drop of the score when the frame is replaced by its neighbours
    stream_frame_relevancy: dict[str, np.ndarray] = field(default_factory=dict)  # per visual stream, (T,) shares
    stream_weights: Optional[dict[str, float]] = None  # multi-stream models: the clip's fusion weights
    grid: tuple[int, int] = (0, 0)  # the ViT's patch grid the maps were upsampled from
    patch_maps: dict[str, np.ndarray] = field(default_factory=dict)  # per stream (T, *grid) in [0, 1]
    logit: float = 0.0  # the target's own logit (logit_scale x cosine, or x (pos - lambda neg))
    versus: Optional[str] = None  # the contrast, in words ('class "neutral"', 'the other classes'); None: raw

    @property
    def streams(self) -> list[str]:
        return list(self.maps)

    @property
    def num_frames(self) -> int:
        return len(self.frame_relevancy)

    def to_dict(self, decimals: int = 3) -> dict:
        """JSON-friendly, as nested lists rounded to ``decimals``: ``maps`` at the patch grid (the maps' own
        resolution; :attr:`maps` are their bilinear upsampling to the crop), the frame measures, the score."""
        r = lambda a: np.round(np.asarray(a, dtype=np.float64), decimals).tolist()  # noqa: E731
        return {"target": self.target, "versus": self.versus, "score": round(self.score, 4),
                "logit": round(self.logit, 4), "grid": list(self.grid),
                "size": list(next(iter(self.maps.values())).shape[1:]),
                "maps": {k: r(v) for k, v in self.patch_maps.items()}, "frame_relevancy": r(self.frame_relevancy),
                "frame_occlusion": r(self.frame_occlusion),
                "stream_frame_relevancy": {k: r(v) for k, v in self.stream_frame_relevancy.items()},
                "stream_weights": self.stream_weights}


# --- recording attention (hooks installed once per model, active inside `_recording` only) ------------
class _Recorder:
    def __init__(self):
        self.vit: list[torch.Tensor] = []  # per ViT block call: softmax output (images * heads, N, N)
        self.vit_heads: list[int] = []
        self.temporal: list[torch.Tensor] = []  # per temporal block call: (B, heads, T+1, T+1)


_ACTIVE: ContextVar[Optional[_Recorder]] = ContextVar("dferclip_explain_recorder", default=None)


def _ask_for_weights(module, args, kwargs):
    if _ACTIVE.get() is None:
        return None
    return args, dict(kwargs, need_weights=True, average_attn_weights=False)


def _keep_weights(module, args, output):
    rec = _ACTIVE.get()
    if rec is None:
        return None
    weights = output[1]
    # the returned weights are a view of the softmax output that multiplied the values: the score depends on
    # that tensor (its base), not on the view
    base = weights._base if weights is not None else None
    if base is None or base.numel() != weights.numel():
        raise ExplainError("this PyTorch version's attention does not expose the weights it used; "
                           "cannot make relevancy maps")
    rec.vit.append(base)
    rec.vit_heads.append(module.num_heads)
    return None


def _temporal_sink() -> Optional[list]:
    """Where a TemporalAttention keeps its probabilities: the active recording's list, else nowhere."""
    rec = _ACTIVE.get()
    return rec.temporal if rec is not None else None


_HOOKS_LOCK = threading.Lock()  # two first explanations at once install one set of hooks


def _install_hooks(model: nn.Module) -> None:
    if getattr(model, "_explain_hooks", False):
        return
    with _HOOKS_LOCK:
        if not getattr(model, "_explain_hooks", False):
            _install_hooks_once(model)


def _install_hooks_once(model: nn.Module) -> None:
    visual = model.clip.visual
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise ExplainError("relevancy maps need a ViT image tower that outputs its class token")
    attns = [m for m in visual.transformer.modules() if isinstance(m, nn.MultiheadAttention)]
    if not attns:
        raise ExplainError("relevancy maps need a ViT image tower (this one has no attention blocks)")
    for m in attns:
        m.register_forward_pre_hook(_ask_for_weights, with_kwargs=True)
        m.register_forward_hook(_keep_weights)
    for m in model.modules():
        if isinstance(m, TemporalAttention):
            m.weights_sink = _temporal_sink
    model._explain_hooks = True


@contextmanager
def _recording(model: nn.Module) -> Iterator[_Recorder]:
    _install_hooks(model)
    rec = _Recorder()
    token = _ACTIVE.set(rec)
    try:
        yield rec
    finally:
        _ACTIVE.reset(token)


# --- the method -------------------------------------------------------------------------------------
def rollout(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Gradient-weighted attention rollout: ``R = I; R += mean_heads(max(0, dA * A)) @ R`` per block in order.
    ``attentions[i]``, ``gradients[i]``: (B, heads, N, N). Returns R (B, N, N)."""
    b, _, n, _ = attentions[0].shape
    r = torch.eye(n, dtype=attentions[0].dtype, device=attentions[0].device).expand(b, n, n)
    for a, g in zip(attentions, gradients):
        r = r + (g * a).clamp(min=0).mean(dim=1) @ r
    return r


def _shares(x: torch.Tensor) -> torch.Tensor:
    total = x.sum()
    return x / total if total > 0 else torch.zeros_like(x)


def resolve_class(model, class_index) -> int:
    """A class index from an index or a class name; ExplainError if unknown."""
    names = model.class_names
    if isinstance(class_index, str):
        if class_index not in names:
            raise ExplainError(f"unknown class {class_index!r}; this model's classes: {', '.join(names)}")
        return names.index(class_index)
    c = int(class_index)
    if not 0 <= c < len(names):
        raise ExplainError(f"class index {c} out of range: this model has {len(names)} classes")
    return c


def text_embedding(model, text: str, class_index=None) -> torch.Tensor:
    """A text's (D,) normalised embedding: with a class, the text as a descriptor of that class (DFER-CLIP: its
    learned context; FineCLIPER: written into the positive descriptor template, through the positive
    adapters), as the workbench's learned rows; without, or for a model without learned prompts (EmoCLIP, whose
    class embeddings are these), plain CLIP text features."""
    if not text or not text.strip():
        raise ExplainError("the text to explain is empty")
    with torch.no_grad():
        if class_index is None or not model.has_learned_prompts:
            return model.encode_texts([text.strip()])[0]
        return F.normalize(model.encode_prompts([text.strip()], [resolve_class(model, class_index)]), dim=-1)[0]


def predicted_class(model, frames: torch.Tensor, renders: Optional[Mapping[str, torch.Tensor]] = None) -> int:
    """The class a prediction shows for one clip's model-input frames (T, 3, H, W): the top logit computed as
    :func:`dferclip.predict.predict_clip` computes it (the runtime's dtype, bf16 autocast on CUDA, and the image
    tower's backend in use), not recomputed in fp32 here, where a near tie can go the other way."""
    from .predict import score_sequences

    dev = next(model.parameters()).device
    positions = torch.arange(frames.shape[0])[None]
    return int(score_sequences(model, frames.detach(), positions, dev=dev, renders=renders)[0][0].argmax())


def _target(model, text, class_index):
    """(target embedding (1, D) or (1, 2, D), description in words, the target's class index or None)."""
    if text is None:
        if class_index is None:
            raise ExplainError("give a class or a text to explain")
        c = resolve_class(model, class_index)
        with torch.no_grad():
            return model.class_embeddings()[c : c + 1].detach(), f'class "{model.class_names[c]}"', c
    c = None if class_index is None else resolve_class(model, class_index)
    if isinstance(text, str):
        words = f'text "{text.strip()}"'
        if c is not None:
            words += f" (class {model.class_names[c]})"
        return text_embedding(model, text, c)[None], words, c
    emb = torch.as_tensor(text).detach().float().reshape(-1)
    if emb.numel() != model.embed_dim:
        raise ExplainError(f"a text embedding of size {emb.numel()} for a model of embedding size {model.embed_dim}")
    return emb[None], "text embedding", c


AUTO = "auto"
OTHERS = "others"
NEUTRAL_NAMES = ("neutral",)


def resolve_versus(model, versus, target_class: Optional[int]) -> tuple[Optional[list[int]], Optional[str]]:
    """The contrast's classes (their mean logit is subtracted) and its words; (None, None) for a raw score.

    ``versus``: None (raw), a class name or index, ``"others"`` (every class but the target's) or ``"auto"``: the
    neutral class when the model has one and the target is not it ("why this expression rather than a neutral
    face": an expression is a departure from neutral), else the other classes."""
    if versus is None:
        return None, None
    names = model.class_names
    if versus == AUTO:
        neutral = [i for i, n in enumerate(names) if n.strip().lower() in NEUTRAL_NAMES]
        versus = neutral[0] if neutral and neutral[0] != target_class else OTHERS
    if versus == OTHERS:
        others = [i for i in range(len(names)) if i != target_class]
        if not others:
            raise ExplainError("a model with one class has no other class to contrast with")
        return others, "the other classes"
    c = resolve_class(model, versus)
    if c == target_class:
        raise ExplainError(f'a class contrasted with itself ("{names[c]}") explains nothing; pick another class')
    return [c], f'class "{names[c]}"'


def _explained(model, emb: torch.Tensor, target: torch.Tensor, versus: Optional[torch.Tensor]):
    """((N,) explained scores, (N,) target logits) of N video embeddings: the score is the target's logit minus
    the contrast classes' mean logit."""
    own = model.score(emb, target)[:, 0]
    return (own if versus is None else own - model.score(emb, versus).mean(dim=-1)), own


def _frames_of(model, video) -> torch.Tensor:
    x = video["video"] if isinstance(video, Mapping) else video
    if not isinstance(x, torch.Tensor) or x.dim() not in (4, 5) or (x.dim() == 5 and x.shape[0] != 1):
        raise ExplainError("explain one clip: a model-input tensor (T, 3, H, W) or (1, T, 3, H, W)")
    return x[0] if x.dim() == 5 else x


def explain_clip(model, video, *, text=None, class_index=None, versus=AUTO,
                 renders: Optional[Mapping[str, torch.Tensor]] = None, occlusion: bool = True) -> Explanation:
    """Explain one clip's score for a target (see the module docstring).

    ``video``: the model-input tensor (1, T, 3, H, W) or (T, 3, H, W), or a FineCLIPER input dict (its
    ``parsing``/``landmarks`` (1, T, 3, H, W) are used as ``renders``). ``text``: a string or a (D,) embedding;
    ``class_index``: an index or a class name. Neither: the class the prediction shows (:func:`predicted_class`,
    computed as the prediction computes it, in the runtime's dtype: the maps themselves are made in fp32).
    ``versus``: the contrast whose logit is subtracted (:func:`resolve_versus`; default the neutral class, None:
    the raw logit). ``renders``: FineCLIPER's parsing/landmark renders (T, 3, H, W) when already made (else its
    face analyzer runs). Captions are not used. ``occlusion=False`` skips the neighbour-replacement check
    (zeros)."""
    frames = _frames_of(model, video)
    if isinstance(video, Mapping) and renders is None and {"parsing", "landmarks"} <= set(video):
        renders = {k: _frames_of(model, video[k]) for k in ("parsing", "landmarks")}
    dev = next(model.parameters()).device
    on_dev = frames.detach().to(dev)
    t = frames.shape[0]
    positions = torch.arange(t, device=dev)[None]
    was_training = model.training
    model.eval()
    try:
        # renders are made once, outside the graph (the face analyzer is not differentiable)
        if renders is None and getattr(model, "needs_face_analysis", False):
            from .predict import mid_level_renders

            renders = mid_level_renders(model, on_dev)
        renders = None if renders is None else {k: v.detach().to(dev).float() for k, v in renders.items()}
        if text is None and class_index is None:  # the class the prediction shows, by the prediction's path
            class_index = predicted_class(model, on_dev, renders)
        x = on_dev.float().requires_grad_(True)  # a graph even when every weight is frozen
        with torch.enable_grad(), _recording(model) as rec:
            feats = model.frame_features(x, renders)
            emb, weights = model.embed_sequences(feats, positions, return_weights=True)
            target, words, target_class = _target(model, text, class_index)
            target = target.to(dev)
            contrast, versus_words = resolve_versus(model, versus, target_class)
            contrast_emb = None
            if contrast is not None:
                with torch.no_grad():
                    contrast_emb = model.class_embeddings()[contrast].detach().to(dev)
            explained, own = _explained(model, emb, target, contrast_emb)
            logit, own_logit = explained[0], own[0]
        stream_feats = feats if isinstance(feats, Mapping) else {model.visual_streams[0]: feats}
        names = list(stream_feats)
        wanted = rec.vit + rec.temporal + [stream_feats[n] for n in names]
        grads = torch.autograd.grad(logit, wanted, allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for w, g in zip(wanted, grads)]
        nv, nt = len(rec.vit), len(rec.temporal)
        maps, patch_maps, grid = _spatial_maps(model, rec, grads[:nv], names, t, tuple(frames.shape[-2:]))
        per_stream = _frame_shares(rec, grads[nv : nv + nt], stream_feats, grads[nv + nt :], names)
        stream_weights = None
        if weights is not None:
            stream_weights = dict(zip(model.streams, map(float, weights[0].detach().cpu())))
        fused = _fuse_shares(per_stream, stream_weights)
        drop = _occlusion(model, feats, positions, target, contrast_emb, float(logit.detach())) \
            if occlusion and t > 1 else torch.zeros(t)
    finally:
        model.train(was_training)
    return Explanation(target=words, score=float(logit.detach()), maps=maps, frame_relevancy=fused.numpy(),
                       frame_occlusion=drop.numpy(), stream_frame_relevancy={k: v.numpy() for k, v in per_stream.items()},
                       stream_weights=stream_weights, grid=grid, patch_maps=patch_maps,
                       logit=float(own_logit.detach()), versus=versus_words)


def _spatial_maps(model, rec: _Recorder, grads, names, t: int, size: tuple[int, int]):
    """Per visual stream (T, H, W) maps in [0, 1] from the ViT blocks' attention and gradients."""
    if not rec.vit:
        raise ExplainError("the image tower ran no attention block while explaining")
    n_images = len(names) * t
    blocks = len(model.clip.visual.transformer.resblocks)
    if len(rec.vit) != blocks or rec.vit[0].shape[0] != n_images * rec.vit_heads[0]:
        raise ExplainError(f"expected one image-tower pass over {n_images} frames ({blocks} blocks), recorded "
                           f"{len(rec.vit)} blocks of {rec.vit[0].shape[0] // rec.vit_heads[0]} images")
    shape = lambda a, h: a.detach().reshape(n_images, h, *a.shape[-2:])  # noqa: E731
    r = rollout([shape(a, h) for a, h in zip(rec.vit, rec.vit_heads)],
                [shape(g, h) for g, h in zip(grads, rec.vit_heads)])
    gh, gw = model.clip.visual.grid_size
    patches = r[:, 0, 1:].reshape(len(names), t, 1, gh, gw).float()

    patch_maps = {name: _unit(m[:, 0]).numpy() for name, m in zip(names, patches)}
    return upsampled_maps(patch_maps, size), patch_maps, (gh, gw)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Scaled to a maximum of 1 (all zero stays zero), float32 on the CPU."""
    top = x.max()
    return (x / top if top > 0 else x).float().cpu()


def upsampled_maps(patch_maps: Mapping[str, np.ndarray], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Patch-grid maps (T, h, w) brought to the crop's size (T, H, W): bilinear, clamped at 0, scaled to a
    maximum of 1 (what :attr:`Explanation.maps` holds; an app can make them from ``patch_maps``)."""
    return {name: _unit(F.interpolate(torch.as_tensor(np.ascontiguousarray(m))[:, None].float(), size=size,
                                      mode="bilinear", align_corners=False)[:, 0].clamp(min=0)).numpy()
            for name, m in patch_maps.items()}


def _frame_shares(rec: _Recorder, temporal_grads, stream_feats, feat_grads, names) -> dict[str, torch.Tensor]:
    """Per visual stream, each frame's share: the temporal transformer's class-token rollout for the stream
    that has one (the video stream), gradient x input of the frame features for mean-pooled streams."""
    out = {}
    for name, f, g in zip(names, (stream_feats[n] for n in names), feat_grads):
        out[name] = _shares((f.detach() * g).sum(dim=-1).clamp(min=0).float().cpu())
    if rec.temporal:
        r = rollout([a.detach() for a in rec.temporal], temporal_grads)
        out["video" if "video" in out else names[0]] = _shares(r[0, 0, 1:].float().cpu())
    return out


def _fuse_shares(per_stream: dict[str, torch.Tensor], weights: Optional[dict[str, float]]) -> torch.Tensor:
    if len(per_stream) == 1 or not weights:
        return next(iter(per_stream.values()))
    w = {k: weights.get(k, 0.0) for k in per_stream}
    total = sum(w.values())
    fused = sum((w[k] / total if total > 0 else 1 / len(w)) * v for k, v in per_stream.items())
    return _shares(fused)


def _occlusion(model, feats, positions: torch.Tensor, target: torch.Tensor, versus: Optional[torch.Tensor],
               score: float) -> torch.Tensor:
    """(T,) mean drop of the explained score when frame t is replaced by its left and by its right neighbour."""
    t = positions.shape[1]
    seqs = []
    for k in range(t):
        for nb in (k - 1 if k > 0 else k + 1, k + 1 if k < t - 1 else k - 1):
            s = positions[0].clone()
            s[k] = nb
            seqs.append(s)
    detached = {k: v.detach() for k, v in feats.items()} if isinstance(feats, Mapping) else feats.detach()
    with torch.no_grad():
        emb = model.embed_sequences(detached, torch.stack(seqs))
        scores = _explained(model, emb, target, versus)[0].float().cpu()
    return score - scores.view(t, 2).mean(dim=1)


# --- pictures -----------------------------------------------------------------------------------------
# a perceptual ramp (dark blue -> blue -> cyan -> yellow -> red), linearly interpolated
_RAMP = np.array([[0, 0, 80], [0, 60, 220], [0, 200, 230], [250, 230, 40], [230, 20, 20]], dtype=np.float32)


def colorize(m: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8 colours."""
    x = np.clip(np.asarray(m, dtype=np.float32), 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_RAMP) - 2)
    frac = (x - lo)[..., None]
    return (_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).round().astype(np.uint8)


def overlay(frame, relevancy: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """A heat map over a frame: ``frame`` (H, W, 3) uint8 array or PIL image, ``relevancy`` (h, w) in [0, 1]
    (resized to the frame). Relevant pixels get up to ``alpha`` of the map's colour. Returns uint8 RGB."""
    from PIL import Image

    img = np.asarray(frame.convert("RGB") if hasattr(frame, "convert") else frame, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ExplainError(f"overlay needs an RGB frame (H, W, 3), got shape {img.shape}")
    m = np.clip(np.asarray(relevancy, dtype=np.float32), 0, 1)
    if m.shape != img.shape[:2]:
        m = np.asarray(Image.fromarray(m).resize((img.shape[1], img.shape[0]), Image.BILINEAR))
    a = alpha * np.clip(m, 0, 1)[..., None] ** 0.5  # a gentle ramp: faint relevancy still shows
    return (img * (1 - a) + colorize(m).astype(np.float32) * a).round().clip(0, 255).astype(np.uint8)


def change_overlay(frame, delta: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """How a map changed, over a frame: ``delta`` (h, w) in [-1, 1] (new map minus old, resized to the frame);
    red where relevancy was gained, blue where it was lost, transparent where nothing moved. uint8 RGB."""
    from PIL import Image

    img = np.asarray(frame.convert("RGB") if hasattr(frame, "convert") else frame, dtype=np.float32)
    d = np.clip(np.asarray(delta, dtype=np.float32), -1, 1)
    if d.shape != img.shape[:2]:
        d = np.asarray(Image.fromarray(d).resize((img.shape[1], img.shape[0]), Image.BILINEAR))
    colour = np.where(d[..., None] > 0, np.float32([230, 30, 30]), np.float32([30, 80, 235]))
    a = alpha * np.abs(d)[..., None] ** 0.5
    return (img * (1 - a) + colour * a).round().clip(0, 255).astype(np.uint8)


def frames_as_images(model, frames: torch.Tensor) -> list[np.ndarray]:
    """Model-input frames (T, 3, H, W) -> uint8 RGB images (what the model saw)."""
    from .predict import as_uint8

    return list(as_uint8(model, frames.detach().cpu()).permute(0, 2, 3, 1).numpy())


def strip_image(ex: Explanation, cell: int = 48, height: int = 64) -> np.ndarray:
    """The frame-importance strip: per frame, a bar of its relevancy share (blue, left half) and of its
    occlusion drop (orange, right half; drops shown as shares of the positive drops), both scaled to the
    largest; uint8 RGB (height, T * cell, 3)."""
    t = ex.num_frames
    img = np.full((height, t * cell, 3), 255, dtype=np.uint8)
    rel = ex.frame_relevancy / max(float(ex.frame_relevancy.max()), 1e-12)
    drop = np.clip(ex.frame_occlusion, 0, None)
    drop = drop / max(float(drop.max()), 1e-12)
    for k in range(t):
        x0 = k * cell
        for value, colour, (a, b) in ((rel[k], (40, 90, 220), (0.1, 0.5)), (drop[k], (240, 140, 30), (0.5, 0.9))):
            h = round(float(value) * (height - 2))
            if h > 0:
                img[height - h :, x0 + int(a * cell) : x0 + int(b * cell)] = colour
        img[:, x0] = 220
    return img
