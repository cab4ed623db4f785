"""Classify one clip: ingest it, encode it once, score it against the model's cached class embeddings.

    from dferclip import load_model
    from dferclip.predict import predict_clip

    pred = predict_clip(load_model("random:dferclip-tiny"), "clip.mp4")
    pred.top, pred.probabilities            # "happiness", {"happiness": 0.61, ...}
    pred.timeline                           # per sliding 16-frame window: start/end seconds, probabilities
    pred.timings                            # {"ingestion": s, "model": s, "label": s, "other": s, "total": s}

    for pred in iter_predict(model, "clip.mp4"):   # the label first, then the timeline window by window
        show(pred.probabilities, pred.timeline)     # pred.complete on the last one

The clip's 16 model frames and the timeline's sliding windows share frames, so every distinct frame goes
through the CLIP image tower once, the clip's own frames first (so its label is ready after one 16-frame
forward), then the windows' new frames, several windows' at a time up to the frames per tower call that run
fastest here (:func:`dferclip.backends.frame_batch`); only the (cheap) temporal model runs per window. Windows
overlap by half, so they share half their frames; their number follows a frame budget (small on CPU).
A FineCLIPER model works the same way: each distinct frame's parsing/landmark renders are made once, its
visual streams share one routed tower pass, and ``pred.streams`` holds the clip's fusion weights.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from . import backends, runtime, zero_gpu
from .video.decode import Limits, WindowSpec

log = logging.getLogger(__name__)

MAX_MIN_WINDOW_S = 2.0  # windows are at least this long when the clip lasts twice as long


@dataclass
class Timeline:
    """Class probabilities over time: one row per sliding window of the model's frame count."""

    start: list[float]  # seconds
    end: list[float]
    probabilities: np.ndarray  # (W, C)

    def __len__(self) -> int:
        return len(self.start)

    def rows(self, classes: list[str]) -> list[dict]:
        """Long format: one row per (window, class), with the window's centre time."""
        out = []
        for s, e, p in zip(self.start, self.end, self.probabilities):
            for c, v in zip(classes, p):
                out.append({"time": round((s + e) / 2, 3), "start": s, "end": e, "expression": c,
                            "probability": float(v)})
        return out


@dataclass
class Prediction:
    classes: list[str]
    probs: np.ndarray  # (C,), sums to 1
    logits: np.ndarray  # (C,)
    video_embedding: torch.Tensor  # (D,), before L2 normalisation, float32 on CPU
    ingest: Any  # dferclip.ingest.IngestResult
    timeline: Optional[Timeline]
    timings: dict[str, float]
    weights: dict
    device: str
    dtype: str
    warnings: list[str] = field(default_factory=list)
    encoded_frames: int = 0  # distinct frames through the image tower (clip + timeline)
    streams: Optional[dict[str, float]] = None  # multi-stream models: each stream's fusion weight for the clip
    renders: Optional[dict[str, list]] = None  # FineCLIPER: the clip's parsing/landmark renders (uint8 RGB)
    windows_total: int = 0  # timeline windows the clip has; the timeline is complete when it holds them all
    backend: str = "eager"  # what ran the image tower (dferclip.backends)

    @property
    def complete(self) -> bool:
        """Whether the timeline holds every window (always true without a timeline)."""
        return self.timeline is None or len(self.timeline) == self.windows_total

    @property
    def top(self) -> str:
        return self.classes[int(np.argmax(self.probs))]

    @property
    def probabilities(self) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.classes, self.probs)}

    def to_dict(self) -> dict:
        """JSON-friendly summary (what ``python -m dferclip predict --json`` prints)."""
        return {
            "top": self.top,
            "probabilities": self.probabilities,
            "timeline": None if self.timeline is None else [
                {"start": s, "end": e, "probabilities": dict(zip(self.classes, map(float, p)))}
                for s, e, p in zip(self.timeline.start, self.timeline.end, self.timeline.probabilities)
            ],
            "weights": {k: v for k, v in self.weights.items()},
            "device": self.device,
            "dtype": self.dtype,
            "backend": self.backend,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "encoded_frames": self.encoded_frames,
            "streams": self.streams,
            "warnings": list(self.warnings),
            "face": face_summary(self.ingest),
            "ingestion": self.ingest.to_dict(),
        }


def face_summary(ingest) -> dict:
    """Which face a prediction read: its track, whether it is the main face, when it is seen, and its box on each
    of the model's frames (None where none is shown; ``held`` where the detector missed it)."""
    return {**ingest.face_dict(),
            "boxes": [{"time_s": round(m.time_s, 3), "box": m.box, "held": m.filled} for m in ingest.frames]}


def _shared_frames(result) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct frames (U, 3, S, S) of the clip and its windows, and for each of the N = 1 + W sequences
    the positions (N, T) of its frames among them (frames are identified by their index in the video)."""
    sequences = [[f.index for f in result.frames]]
    tensors = [result.video[0]]
    if result.windows is not None:
        sequences += [list(w.indices) for w in result.windows.windows]
        tensors += list(result.windows.video)
    slot: dict[int, int] = {}
    picks = []
    for seq, video in zip(sequences, tensors):
        for t, index in enumerate(seq):
            if index not in slot:
                slot[index] = len(picks)
                picks.append(video[t])
    positions = torch.as_tensor([[slot[i] for i in seq] for seq in sequences])
    return torch.stack(picks), positions


def timeline_spec(duration_s: float, frame_budget: int, num_frames: int = 16) -> WindowSpec:
    """Half-overlapping windows (they share half their frames) spread over the clip, so the timeline adds
    about ``frame_budget`` frames to encode: W windows use about num_frames / 2 * (W + 1) distinct frames."""
    max_windows = max(1, frame_budget // max(num_frames // 2, 1) - 1)
    length = max(min(MAX_MIN_WINDOW_S, duration_s / 2), 2 * duration_s / (max_windows + 1), 0.1)
    return WindowSpec(length_s=length, stride_s=length / 2, max_windows=max_windows)


def default_frame_budget(dev: torch.device, visual_streams: int = 1) -> int:
    """Extra frames the timeline may add; each visual stream (FineCLIPER's renders) costs a tower pass."""
    return (256 if dev.type == "cuda" else 48) // max(visual_streams, 1)


def _batched(fn, frames: torch.Tensor, renders: Optional[dict], batch: int):
    """``fn(frames, renders)`` over batches of frames; per-frame outputs (a tensor or a dict of them) joined."""
    return join_features([fn(frames[i : i + batch], None if renders is None else {k: v[i : i + batch] for k, v in renders.items()})
                          for i in range(0, len(frames), batch)])


def mid_level_renders(model, frames: torch.Tensor) -> Optional[dict]:
    """FineCLIPER's parsing/landmark renders (U, 3, S, S) of distinct frames, when the model uses them."""
    if not model.needs_face_analysis:
        return None
    return {k: v.squeeze(0) for k, v in model.render_mid_level(frames.unsqueeze(0)).items()}


def encode_frames(model, frames: torch.Tensor, *, dev, dtype=None, renders=None, batch: Optional[int] = None):
    """Per-frame tower features of ``frames`` (U, 3, S, S) (a tensor, or a dict of them for multi-stream
    models), on ``dev``, ``batch`` frames a tower call (default: :func:`dferclip.backends.frame_batch`);
    ``renders`` are FineCLIPER's mid-level renders of the same frames."""
    batch = batch or backends.frame_batch(model, dev, dtype)
    with runtime.inference(dev, dtype):
        renders = None if renders is None else {k: zero_gpu.place(v, dev) for k, v in renders.items()}
        return _batched(backends.frame_function(model, dev, dtype), zero_gpu.place(frames, dev), renders, batch)


def score_features(model, feats, positions: torch.Tensor, *, dev, dtype=None):
    """Logits (N, C), video embeddings (N, D) and fusion weights (N, S) or None of N frame sequences given as
    (N, T) positions into per-frame features ``feats`` (from :func:`encode_frames`)."""
    with runtime.inference(dev, dtype):
        # multi-stream models (FineCLIPER) also give the clip's fusion weights; single-stream ones give None
        video_emb, weights = model.embed_sequences(feats, zero_gpu.place(positions, dev), return_weights=True)
        weights = None if weights is None else weights.float().cpu()
        logits = model.score(video_emb, model.class_embeddings())
    return logits.float().cpu(), video_emb.float().cpu(), weights


def join_features(parts: list):
    """Per-frame features encoded in parts (tensors or dicts of tensors), joined along the frame axis."""
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def score_sequences(model, frames: torch.Tensor, positions: torch.Tensor, *, dev, dtype=None, renders=None,
                    batch: Optional[int] = None):
    """Logits (N, C), video embeddings (N, D) and, for multi-stream models, fusion weights (N, S) of N frame
    sequences over shared ``frames``: every distinct frame goes through the image tower(s) once."""
    feats = encode_frames(model, frames, dev=dev, dtype=dtype, renders=renders, batch=batch)
    return score_features(model, feats, positions, dev=dev, dtype=dtype)


class _FramesOnDemand:
    """Shared distinct frames encoded in order, each once, as far as the sequences scored so far need them, or
    with ``ahead`` a tower call's worth further (the frames a call that run fastest here).

    ``_shared_frames`` numbers frames in order of first use, so sequences 0..j need exactly frames [0, m_j)."""

    def __init__(self, model, frames: torch.Tensor, renders: Optional[dict], *, dev, dtype):
        self.model, self.frames, self.all_renders, self.dev, self.dtype = model, frames, renders, dev, dtype
        self.batch = backends.frame_batch(model, dev, dtype)
        self.parts: list = []
        self.done = 0

    def score(self, positions: torch.Tensor, ahead: bool = False):
        need = int(positions.max()) + 1
        if need > self.done:
            if ahead:
                need = min(len(self.frames), max(need, self.done + self.batch))
            chunk = slice(self.done, need)
            renders = None if self.all_renders is None else {k: v[chunk] for k, v in self.all_renders.items()}
            self.parts.append(encode_frames(self.model, self.frames[chunk], dev=self.dev, dtype=self.dtype,
                                            renders=renders, batch=self.batch))
            self.done = need
        return score_features(self.model, join_features(self.parts), positions, dev=self.dev, dtype=self.dtype)


@dataclass
class PreparedClip:
    """A clip made ready for the model on the CPU (decoded, faces found, FineCLIPER's face mesh drawn): its
    distinct model frames and renders as uint8 (what crosses into a GPU worker), and where each sequence's
    frames are among them (the clip's own first, then each timeline window)."""
    ingest: Any  # dferclip.ingest.IngestResult
    frames: torch.Tensor  # (U, 3, S, S) uint8
    positions: torch.Tensor  # (1 + W, T)
    renders: Optional[dict[str, torch.Tensor]]  # FineCLIPER: (U, 3, S, S) uint8 per mid-level stream
    ingestion_s: float
    face_analysis_s: float


def as_uint8(model, x: torch.Tensor) -> torch.Tensor:
    """Model-input frames back to the uint8 pixels they were made from (exact: they came from uint8)."""
    return (model.input_config.denormalize(x.float()) * 255).round_().clamp_(0, 255).to(torch.uint8)


def _as_input(model, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, S, S) -> model input, by the very operations ingestion used."""
    return model.input_config.normalize(pixels.float().div_(255.0))


def prepare_clip(model, path: str | Path, *, windows: bool = True, frame_budget: Optional[int] = None,
                 detector=None, fallback: str = "center", limits: Optional[Limits] = None,
                 dev=None) -> PreparedClip:
    """The CPU half of a prediction (arguments as :func:`predict_clip`; ``dev``: where the model will run, which
    sets the timeline's frame budget)."""
    return prepare_clips([model], path, windows=windows, frame_budget=frame_budget, detector=detector,
                         fallback=fallback, limits=limits, dev=dev)[0]


def prepare_clips(models: Sequence, path: str | Path, *, windows: bool = True, frame_budget: Optional[int] = None,
                  detector=None, fallback: str = "center", limits: Optional[Limits] = None,
                  dev=None) -> list[PreparedClip]:
    """:func:`prepare_clip` for several models: the clip is decoded and its faces found once
    (:func:`~dferclip.video.ingest.ingest_faces`), then each model gets its own frames and crops."""
    return [per_face[0] for per_face in prepare_faces(models, path, faces="main", windows=windows,
                                                      frame_budget=frame_budget, detector=detector,
                                                      fallback=fallback, limits=limits, dev=dev)]


def prepare_faces(models: Sequence, path: str | Path, *, faces: str = "all", windows: bool = True,
                  frame_budget: Optional[int] = None, detector=None, fallback: str = "center",
                  limits: Optional[Limits] = None, dev=None, max_faces: Optional[int] = None,
                  same_face_as=None) -> list[list[PreparedClip]]:
    """For each model, a :class:`PreparedClip` per face track of the clip (``faces="all"``, the main face first;
    at most ``max_faces``, the largest and longest seen) or for its main face (``"main"``): one decode and one
    face search for all of them. ``same_face_as`` (an ``IngestResult`` of the clip, e.g. a face a visitor picked):
    only that face, for each model (:func:`~dferclip.video.ingest.same_face`)."""
    from .video.ingest import ingest_faces, same_face

    t0 = time.perf_counter()
    dev = torch.device(dev) if dev is not None else runtime.device()
    specs = []
    for model in models:
        budget = default_frame_budget(dev, len(model.visual_streams)) if frame_budget is None else frame_budget
        specs.append(partial(timeline_spec, frame_budget=budget, num_frames=model.input_config.num_frames)
                     if windows else None)
    per_model = ingest_faces(path, [m.input_config for m in models], faces=faces, detector=detector,
                             fallback=fallback, windows=specs, limits=limits or Limits(), max_faces=max_faces)
    if same_face_as is not None:
        per_model = [[same_face(results, same_face_as)] for results in per_model]
    ingestion_s = time.perf_counter() - t0  # one pass for all the models and faces: each prediction reports it whole
    prepared = []
    for model, results in zip(models, per_model):
        clips = []
        for result in results:
            frames, positions = _shared_frames(result)
            t1 = time.perf_counter()
            renders = mid_level_renders(model, frames)
            clips.append(PreparedClip(result, as_uint8(model, frames), positions,
                                      None if renders is None else {k: as_uint8(model, v) for k, v in renders.items()},
                                      ingestion_s=ingestion_s, face_analysis_s=time.perf_counter() - t1))
        prepared.append(clips)
    return prepared


@dataclass
class Scored:
    """One sequence scored on the model's device (small: it is what crosses back from a GPU worker)."""
    logits: torch.Tensor  # (C,) float32
    video_embedding: torch.Tensor  # (D,) float32
    weights: Optional[torch.Tensor]  # (S,) fusion weights of a multi-stream model
    encoded_frames: int
    seconds: float
    device: str
    dtype: str
    backend: str


@zero_gpu.estimate(lambda frames, positions, renders=None, **_: 10 + 0.02 * len(frames) * (1 + len(renders or {})))
def score_prepared(model, frames: torch.Tensor, positions: torch.Tensor, renders: Optional[dict] = None,
                   *, dtype=None) -> Iterator[Scored]:
    """The device half of a prediction: each sequence of a :class:`PreparedClip` scored in turn (the clip's own
    first), every distinct frame through the image tower once, on the device the model is on."""
    dev = next(model.parameters()).device
    dtype = dtype or runtime.compute_dtype(dev)
    renders = None if renders is None else {k: _as_input(model, v) for k, v in renders.items()}
    encoder = _FramesOnDemand(model, _as_input(model, frames), renders, dev=dev, dtype=dtype)
    backend = backends.in_use(model, dev, dtype)
    for n in range(len(positions)):
        t = time.perf_counter()
        logits, emb, weights = encoder.score(positions[n : n + 1], ahead=n > 0)
        yield Scored(logits[0], emb[0], None if weights is None else weights[0], encoder.done,
                     time.perf_counter() - t, str(dev), runtime.dtype_name(dtype), backend)


def iter_predict(model, path: str | Path, *, windows: bool = True, frame_budget: Optional[int] = None,
                 detector=None, fallback: str = "center", limits: Optional[Limits] = None, dev=None,
                 dtype=None, prepared: Optional[PreparedClip] = None) -> Iterator[Prediction]:
    """Classify the clip at ``path``, result first, timeline after (arguments as :func:`predict_clip`).

    Yields the clip's :class:`Prediction` as soon as its own frames are encoded (label, probabilities, crops;
    ``timeline`` empty, or None without ``windows``), then the same prediction with the timeline grown by one
    window per yield, each window encoding only the frames no earlier sequence used. The last yield is
    complete (``pred.complete``) and is what :func:`predict_clip` returns.

    Decoding, face detection and the face mesh run here (:func:`prepare_clip`); the model's part
    (:func:`score_prepared`) runs in a GPU slot on ZeroGPU (:mod:`dferclip.zero_gpu`), the model sent by key.
    ``dev``: the device the model runs on (default: its parameters'), which sets the timeline's frame budget.
    ``prepared``: the clip already made ready for this model (:func:`prepare_clips`).
    """
    t0 = time.perf_counter()
    dev = torch.device(dev) if dev is not None else next(model.parameters()).device
    clip = prepared or prepare_clip(model, path, windows=windows, frame_budget=frame_budget, detector=detector,
                                    fallback=fallback, limits=limits, dev=dev)
    scores = zero_gpu.run_iter(model, score_prepared, clip.frames, clip.positions, clip.renders, dtype=dtype)
    try:
        yield from _scored_predictions(model, clip, scores, t0)
    finally:
        scores.close()  # a GPU slot ends with the prediction, even one stopped early


def _scored_predictions(model, clip: PreparedClip, scores: Iterator[Scored], t0: float,
                        frame_offset: int = 0) -> Iterator[Prediction]:
    """:func:`iter_predict`'s results from the clip's sequences as ``scores`` yields them (its first, then each
    window's); ``frame_offset``: frames of other clips the same scorer encoded before this one's."""
    result = clip.ingest
    t1 = time.perf_counter()
    first = next(scores)
    spans = [] if result.windows is None else result.windows.windows
    probs = first.logits.softmax(-1).numpy()
    renders = None
    if clip.renders is not None:
        renders = {k: list(v[clip.positions[0]].permute(0, 2, 3, 1).numpy()) for k, v in clip.renders.items()}
    pred = Prediction(
        classes=model.class_names, probs=probs, logits=first.logits.numpy(), video_embedding=first.video_embedding,
        ingest=result, timeline=None if result.windows is None else Timeline([], [], probs[None][:0]),
        weights=dict(model.weights_info), device=first.device, dtype=first.dtype,
        warnings=list(result.warnings), encoded_frames=min(first.encoded_frames - frame_offset, len(clip.frames)), timings={},
        streams=None if first.weights is None else dict(zip(model.streams, map(float, first.weights))),
        renders=renders, windows_total=len(spans), backend=first.backend,
    )
    model_s, label_s = clip.face_analysis_s + time.perf_counter() - t1, time.perf_counter() - t0

    def timed(p: Prediction) -> Prediction:
        p.timings = {"ingestion": clip.ingestion_s, "model": model_s, "label": label_s,
                     "other": time.perf_counter() - t0 - clip.ingestion_s - model_s,
                     "total": time.perf_counter() - t0}
        if clip.renders is not None:
            p.timings["face_analysis"] = clip.face_analysis_s  # part of "model"
        return p

    yield timed(pred)
    rows = []
    for w, span in enumerate(spans, start=1):
        t = time.perf_counter()
        scored = next(scores)
        rows.append(scored.logits.softmax(-1).numpy())
        model_s += time.perf_counter() - t
        done = spans[:w]
        pred = replace(pred, timeline=Timeline([float(s.start_s) for s in done], [float(s.end_s) for s in done],
                                               np.stack(rows)),
                       encoded_frames=min(scored.encoded_frames - frame_offset, len(clip.frames)))
        yield timed(pred)


def predict_prepared(model, clips: Sequence[PreparedClip], *, dtype=None) -> list[Prediction]:
    """Several prepared clips (a clip's faces, from :func:`prepare_faces`) scored in one call on the model's device,
    so on ZeroGPU they share one GPU slot: their frames are joined, each still through the image tower once."""
    t0 = time.perf_counter()
    sizes = [len(c.frames) for c in clips]
    offsets = np.cumsum([0] + sizes[:-1]).tolist()
    frames = torch.cat([c.frames for c in clips])
    positions = torch.cat([c.positions + offset for c, offset in zip(clips, offsets)])
    renders = None
    if clips[0].renders is not None:
        renders = {k: torch.cat([c.renders[k] for c in clips]) for k in clips[0].renders}
    scores = zero_gpu.run_iter(model, score_prepared, frames, positions, renders, dtype=dtype)
    out = []
    try:
        for clip, offset in zip(clips, offsets):
            pred = None
            for pred in _scored_predictions(model, clip, scores, t0, frame_offset=offset):
                pass
            out.append(pred)
    finally:
        scores.close()
    return out


def predict_clip(model, path: str | Path, *, windows: bool = True, frame_budget: Optional[int] = None,
                 detector=None, fallback: str = "center", limits: Optional[Limits] = None, dev=None,
                 dtype=None, prepared: Optional[PreparedClip] = None, faces: str = "main"):
    """Classify the clip at ``path`` (see the module docstring); the last of :func:`iter_predict`'s results.

    ``faces="main"`` reads the clip's main face and returns one :class:`Prediction`; ``faces="all"`` returns a
    list, one per face track (:func:`predict_faces`).

    ``windows`` adds the timeline; ``frame_budget`` bounds the extra frames it encodes (default: 48 on CPU,
    256 on CUDA, divided by the number of visual streams of a FineCLIPER model). Unusable files raise
    ``VideoError`` subclasses; a clip without a face is classified from centre crops, with a warning
    (``fallback="error"`` raises ``NoFaceFoundError`` instead).
    """
    if faces != "main":
        if faces != "all":
            raise ValueError(f"faces must be 'main' or 'all', got {faces!r}")
        return predict_faces(model, path, windows=windows, frame_budget=frame_budget, detector=detector,
                             fallback=fallback, limits=limits, dev=dev, dtype=dtype)
    pred = None
    for pred in iter_predict(model, path, windows=windows, frame_budget=frame_budget, detector=detector,
                             fallback=fallback, limits=limits, dev=dev, dtype=dtype, prepared=prepared):
        pass
    return pred


def predict_models(models: Sequence, path: str | Path, *, windows: bool = True, frame_budget: Optional[int] = None,
                   detector=None, fallback: str = "center", limits: Optional[Limits] = None, dev=None,
                   dtype=None) -> list[Prediction]:
    """The clip at ``path`` classified by each of ``models`` (arguments as :func:`predict_clip`), decoded and
    face-cropped once for all of them (:func:`prepare_clips`)."""
    dev = torch.device(dev) if dev is not None else next(models[0].parameters()).device
    clips = prepare_clips(models, path, windows=windows, frame_budget=frame_budget, detector=detector,
                          fallback=fallback, limits=limits, dev=dev)
    return [predict_clip(model, path, dev=dev, dtype=dtype, prepared=clip) for model, clip in zip(models, clips)]


def predict_faces(model, path: str | Path, *, windows: bool = True, frame_budget: Optional[int] = None,
                  detector=None, fallback: str = "center", limits: Optional[Limits] = None, dev=None,
                  dtype=None) -> list[Prediction]:
    """Every face of the clip classified, the main face first (arguments as :func:`predict_clip`): one decode and
    one face search, then each face read over its own frames (``pred.ingest.track_id``, ``pred.ingest.span_s``),
    all in one call on the model's device (:func:`predict_prepared`). A clip without a face gives one prediction
    from the frames' centres."""
    dev = torch.device(dev) if dev is not None else next(model.parameters()).device
    (clips,) = prepare_faces([model], path, faces="all", windows=windows, frame_budget=frame_budget,
                             detector=detector, fallback=fallback, limits=limits, dev=dev)
    return predict_prepared(model, clips, dtype=dtype)
