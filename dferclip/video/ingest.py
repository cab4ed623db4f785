"""From a video file to the model's input: one call, :func:`ingest` (:func:`ingest_many` for several models).

Sample the frames the model's sampler picks, find the clip's main face in them, cut a square crop
with a margin around it, resize to the model's size and normalise as its ``InputConfig`` says. The
result also carries the crops as images, per-frame metadata, warnings and timings, and optionally
sliding windows over the clip for a timeline.
"""
from __future__ import annotations

import bisect
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..config import InputConfig
from ..errors import NoFaceFoundError
from .decode import (
    DecodedFrame,
    Limits,
    VideoInfo,
    VideoReader,
    Window,
    WindowSpec,
    sample_indices,
    sliding_windows,
)
from .faces import (
    Detection,
    FaceDetector,
    MTCNNDetector,
    TrackingConfig,
    center_region,
    crop_boxes,
    crop_region,
    crop_square,
    FaceTrack,
    fill_track,
    shared_boxes,
)
from .tracking import FrameFaces, appearance, assign_detections, frame_signature, track_faces

log = logging.getLogger(__name__)

FALLBACKS = ("center", "error")
DEFAULT_MARGIN = 0.15  # crop side = 1.3 x the face box's longer side


@dataclass
class FrameMeta:
    """One sampled frame: where it is in the video and where its crop came from.

    ``box`` is the face box (x0, y0, x1, y1) in upright source pixels, None without a face;
    ``crop`` the square actually cut (may extend past the frame, padded black); ``confidence`` the
    detector's score, None when the box was ``filled`` from neighbouring frames or no face was found.
    """

    index: int
    time_s: float
    box: Optional[List[float]]
    crop: List[float]
    confidence: Optional[float]
    filled: bool


@dataclass
class WindowBatch:
    """Sliding windows: ``video`` (W, T, 3, S, S) model input; ``windows`` their spans and frames."""

    video: torch.Tensor
    windows: List[Window]
    frames: List[FrameMeta]  # every distinct frame the windows use, in time order

    def to_dict(self) -> dict:
        return {
            "shape": list(self.video.shape),
            "windows": [{"start_s": round(w.start_s, 4), "end_s": round(w.end_s, 4), "indices": list(w.indices)} for w in self.windows],
            "frames": [asdict(f) for f in self.frames],
        }


@dataclass
class IngestResult:
    """What :func:`ingest` returns. ``video`` is (1, T, 3, S, S), ready for the model's forward."""

    video: torch.Tensor
    crops: list  # PIL images, S x S, the frames the model sees (in order, repeats included)
    frames: List[FrameMeta]
    status: str  # "ok": face in most frames; "partial": in under half; "no_face": none (fallback crop)
    source: VideoInfo
    input_config: InputConfig
    warnings: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    windows: Optional[WindowBatch] = None
    no_face_spans: List[Tuple[float, float]] = field(default_factory=list)  # seconds of the clip without the face
    track_id: Optional[int] = None  # which face of the clip (dferclip.video.tracking), None without one
    main: bool = True  # whether it is the clip's main face
    span_s: Optional[Tuple[float, float]] = None  # first and last time the face is detected
    faces: int = 0  # face tracks in the clip

    @property
    def face_found(self) -> bool:
        return self.status != "no_face"

    def to_dict(self) -> dict:
        """JSON-serialisable summary (no tensors or images; their shapes instead)."""
        return {
            "status": self.status,
            "face_found": self.face_found,
            "warnings": list(self.warnings),
            "source": self.source.to_dict(),
            "input": {**asdict(self.input_config), "shape": list(self.video.shape)},
            "frames": [asdict(f) for f in self.frames],
            "timings": dict(self.timings),
            "windows": self.windows.to_dict() if self.windows is not None else None,
            "no_face_spans": [list(span) for span in self.no_face_spans],
            "face": self.face_dict(),
        }

    def face_dict(self) -> dict:
        """Which face of the clip this is: its track, whether it is the main face, the clip's face count, its span."""
        return {"track": self.track_id, "main": self.main, "faces_in_clip": self.faces,
                "span_s": None if self.span_s is None else [round(v, 3) for v in self.span_s]}


@functools.lru_cache(maxsize=1)
def default_detector() -> FaceDetector:
    """The shared MTCNN detector (weights load on first use)."""
    return MTCNNDetector()


def ingest(
    path,
    input_config: InputConfig = InputConfig(),
    *,
    detector: Optional[FaceDetector] = None,
    fallback: str = "center",
    windows: Optional[WindowSpec | Callable[[float], WindowSpec]] = None,
    limits: Limits = Limits(),
    margin: float = DEFAULT_MARGIN,
    tracking: TrackingConfig = TrackingConfig(),
) -> IngestResult:
    """Turn the video at ``path`` into the model's input and the face crops it sees.

    ``fallback`` says what to do when no face is found in any sampled frame: ``"center"`` crops the
    centre square of every frame and sets ``status="no_face"`` with a warning; ``"error"`` raises
    :class:`~dferclip.errors.NoFaceFoundError`. Bad files raise :class:`~dferclip.errors.VideoError`
    subclasses. ``windows`` adds sliding windows over the clip (``result.windows``); it may be a function
    of the clip's duration in seconds, so the windows can be sized without opening the file twice.
    """
    return ingest_many(path, [input_config], detector=detector, fallback=fallback, windows=[windows], limits=limits,
                       margin=margin, tracking=tracking)[0]


def ingest_many(
    path,
    input_configs: Sequence[InputConfig],
    *,
    detector: Optional[FaceDetector] = None,
    fallback: str = "center",
    windows: Optional[Sequence[Optional[WindowSpec | Callable[[float], WindowSpec]]]] = None,
    limits: Limits = Limits(),
    margin: float = DEFAULT_MARGIN,
    tracking: TrackingConfig = TrackingConfig(),
) -> List[IngestResult]:
    """:func:`ingest` for several models' inputs at once (``windows``: one entry per input config): the clip
    is opened, decoded and searched for faces once, over the union of the frames every model samples; each
    model then gets its own frames, crops (its size and resize) and normalisation."""
    return [per_face[0] for per_face in ingest_faces(path, input_configs, faces="main", detector=detector,
                                                     fallback=fallback, windows=windows, limits=limits,
                                                     margin=margin, tracking=tracking)]


FACE_CHOICES = ("main", "all")


def ingest_faces(
    path,
    input_configs: Sequence[InputConfig],
    *,
    faces: str = "all",
    detector: Optional[FaceDetector] = None,
    fallback: str = "center",
    windows: Optional[Sequence[Optional[WindowSpec | Callable[[float], WindowSpec]]]] = None,
    limits: Limits = Limits(),
    margin: float = DEFAULT_MARGIN,
    tracking: TrackingConfig = TrackingConfig(),
    max_faces: Optional[int] = None,
) -> List[List[IngestResult]]:
    """Every face of the clip (``faces="all"``) or its main face (``"main"``), for each model's input: a list per
    input config of one :class:`IngestResult` per face track (``result.track_id``), the main face first.

    The clip is decoded and searched for faces once: the frames the models sample plus, for every face, a regular
    scan (``tracking.scan_fps``), linked into tracks (:mod:`dferclip.video.tracking`). Each track gets its own model frames,
    sampled as the model's loader does over the span where that face is present, and, with ``windows``, its own
    timeline over that span (the main face's timeline covers the clip when the face is there throughout). Frames
    the tracks' samples add are decoded and searched afterwards, each once, and given to the tracks they belong to.
    A clip without a face gives one result, cut from the frames' centres (``fallback="center"``). ``max_faces``
    keeps the main face and the faces seen largest and longest (``track.score``); ``result.faces`` still counts
    every track of the clip."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    if faces not in FACE_CHOICES:
        raise ValueError(f"faces must be one of {FACE_CHOICES}, got {faces!r}")
    configs = list(input_configs)
    windows = list(windows) if windows is not None else [None] * len(configs)
    if not configs or len(windows) != len(configs):
        raise ValueError("ingest_faces needs one or more input configs and one windows entry per config")
    detector = detector or default_detector()
    warnings: List[List[str]] = [[] for _ in configs]
    start = time.perf_counter()

    # decoding and detection overlap: each chunk of decoded frames goes to the detector at once
    with VideoReader(path, limits) as reader, ThreadPoolExecutor(max_workers=1) as pool:
        n = reader.num_frames
        frame_times = reader.frame_times
        clip_indices = [sample_indices(n, cfg.num_frames, cfg.sampler) for cfg in configs]
        duration = reader.info.duration_s or 0.0
        specs = [w(duration) if callable(w) else w for w in windows]
        spans = [_window_spans(frame_times, cfg, spec, limits, warned) if spec else []
                 for cfg, spec, warned in zip(configs, specs, warnings)]
        # every face: a regular scan besides the models' frames, to find and follow faces the models' frames miss;
        # the main face alone is found on the models' frames, as fast as before (a scan of a long clip seeks far)
        scan = scan_indices(frame_times, tracking) if faces == "all" else []
        wanted = sorted(set(scan).union(*clip_indices, *(w.indices for s in spans for w in s)))
        chunk = min(32, max(4, len(wanted) // 4))  # small enough to overlap, large enough to batch
        frames: List[DecodedFrame] = []
        jobs = []
        for frame in reader.iter_frames(wanted):
            frames.append(frame)
            if len(frames) % chunk == 0 or len(frames) == len(wanted):
                jobs.append(pool.submit(_detect, detector, frames[len(jobs) * chunk :]))
        info = reader.info
        decode_done = time.perf_counter()
        results = [job.result() for job in jobs]
        found = [faces_on for part, _ in results for faces_on in part]
        detect_s = sum(seconds for _, seconds in results)
        tracks, main = track_faces(found, (info.width, info.height), tracking)
        tracks = sorted(tracks, key=lambda tr: tr.id != main)  # the main face first
        chosen = tracks if faces == "all" else tracks[:1]
        if max_faces is not None and len(chosen) > max(max_faces, 1):
            kept = {tr.id for tr in sorted(chosen, key=lambda tr: (tr.id != main, -tr.score))[:max(max_faces, 1)]}
            chosen = [tr for tr in chosen if tr.id in kept]
        times = [f.time_s for f in frames]
        # per chosen track and config: the model's frames (and windows) from where that face is
        plans = []
        for track in chosen or [None]:
            plan = []
            if track is not None:
                hit = [frames[t] for t, d in enumerate(track.detections) if d is not None]
                hit_times = [f.time_s for f in hit]
                present = None  # the frames where this face is, worked out when a model's frames need them
            for k, cfg in enumerate(configs):
                indices, track_spans = clip_indices[k], spans[k]
                if track is not None:
                    if any(face_absent(hit_times, frame_times[i], tracking.max_hold_s) for i in indices):
                        # the face is absent for longer than a missed detection explains (a title card, a cut, the
                        # face leaving or arriving): its frames are sampled from where it is
                        present = present or present_frames([f.index for f in hit], frame_times, tracking.max_hold_s)
                        indices = [present[i] for i in sample_indices(len(present), cfg.num_frames, cfg.sampler)]
                        if track_spans:
                            track_spans = _span_windows(frame_times, hit[0].index, hit[-1].index, cfg, windows[k],
                                                        limits)
                plan.append((indices, track_spans))
            plans.append(plan)
        needed = set().union(*(set(ix).union(*(w.indices for w in sp)) for plan in plans for ix, sp in plan))
        extra = sorted(needed - set(wanted))
        if extra:
            more = list(reader.iter_frames(extra))
            more_found, seconds = _detect(detector, more)
            detect_s += seconds
            extra_hits = [assign_detections(chosen, times, f.time_s, ff.detections, ff.appearances, tracking)
                          for f, ff in zip(more, more_found)]
            joined = frames + more
            order = sorted(range(len(joined)), key=lambda k: joined[k].index)
            frames = [joined[k] for k in order]
            for j, track in enumerate(chosen):
                both = track.detections + [hits[j] for hits in extra_hits]
                track.detections = [both[k] for k in order]
        for warned in warnings:
            warned.extend(reader.warnings)
    detect_done = time.perf_counter()
    decoded = {f.index: f for f in frames}
    shared = {"decode_s": decode_done - start,  # probing and decoding
              "detect_s": detect_s}  # detector busy time, mostly while decoding goes on
    out: List[List[IngestResult]] = [[] for _ in configs]
    for track, plan in zip(chosen or [None], plans):
        metas = _locate_faces(frames, track, info, margin, tracking)
        meta_of = {m.index: m for m in metas}
        no_face = _no_face_spans(metas, info.duration_s)
        for k, (cfg, (indices, track_spans)) in enumerate(zip(configs, plan)):
            result = _model_input(cfg, indices, track_spans, list(warnings[k]), decoded, meta_of, metas, no_face,
                                  info, n, fallback, tracking, shared, start, detect_done)
            if track is not None:
                hit = [m for m in metas if m.confidence is not None]
                result.track_id, result.main = track.id, track.id == main
                result.span_s = (hit[0].time_s, hit[-1].time_s)
            result.faces = len(tracks)
            out[k].append(result)
    return out


def same_face(results: Sequence[IngestResult], other: IngestResult) -> IngestResult:
    """Of one clip's face results, the one of the face ``other`` (a result of another ingestion of the clip) is of:
    the most frames where both have the face detected with overlapping boxes (the first, the main face, when none
    does)."""
    theirs = {m.index: m.box for m in other.frames if m.confidence is not None}

    def shared(result: IngestResult) -> int:
        examined = result.windows.frames if result.windows is not None else result.frames
        return shared_boxes({m.index: m.box for m in examined if m.confidence is not None}, theirs)

    best = max(results, key=shared)
    return best if shared(best) else results[0]


def face_absent(detected_s: Sequence[float], t: float, max_hold_s: float) -> bool:
    """Whether a face detected at ``detected_s`` (sorted seconds) is away at time ``t``: inside a gap between
    detections longer than ``max_hold_s``, or further than that before the first or after the last."""
    j = bisect.bisect_left(detected_s, t - 1e-6)
    if j < len(detected_s) and abs(detected_s[j] - t) <= 1e-6:
        return False
    before, after = (detected_s[j - 1] if j else None), (detected_s[j] if j < len(detected_s) else None)
    if before is not None and after is not None:
        return after - before > max_hold_s + 1e-6
    return abs(t - (before if before is not None else after)) > max_hold_s + 1e-6


def present_frames(detected: Sequence[int], frame_times: Sequence[float], max_hold_s: float) -> List[int]:
    """The clip's frames where a face is present: from each detection (frame indices, sorted) to the next one
    when they are at most ``max_hold_s`` apart, and the detected frames themselves."""
    present = []
    for a, b in zip(detected, detected[1:]):
        present.extend(range(a, b) if frame_times[b] - frame_times[a] <= max_hold_s + 1e-6 else [a])
    return present + [detected[-1]]


def scan_indices(frame_times: Sequence[float], tracking: TrackingConfig) -> List[int]:
    """The frames examined for faces besides the models' own: about ``tracking.scan_fps`` a second, at most
    ``tracking.max_scan_frames``."""
    n = len(frame_times)
    if n < 2:
        return list(range(n))
    duration = frame_times[-1] - frame_times[0]
    count = min(tracking.max_scan_frames, max(2, int(duration * tracking.scan_fps) + 1), n)
    return sorted({round(k * (n - 1) / (count - 1)) for k in range(count)})


def _span_windows(frame_times: Sequence[float], lo: int, hi: int, cfg: InputConfig, spec, limits: Limits) -> List[Window]:
    """Sliding windows over frames ``lo``..``hi`` only (a face's span), in the clip's seconds and frame indices."""
    times = list(frame_times[lo : hi + 1])
    spec = spec(times[-1] - times[0] + (times[1] - times[0] if len(times) > 1 else 0.0)) if callable(spec) else spec
    ignored: List[str] = []
    return [Window(start_s=round(w.start_s + times[0], 6), end_s=round(w.end_s + times[0], 6),
                   indices=tuple(lo + i for i in w.indices))
            for w in _window_spans(times, cfg, spec, limits, ignored)]


def _model_input(input_config: InputConfig, clip_indices: List[int], spans: List[Window], warnings: List[str],
                 decoded: Dict[int, DecodedFrame], meta_of: Dict[int, FrameMeta], metas: List[FrameMeta],
                 no_face: List[Tuple[float, float]], info: VideoInfo, n: int, fallback: str,
                 tracking: TrackingConfig, shared: dict, start: float, detect_done: float) -> IngestResult:
    """One model's :class:`IngestResult` from the clip's decoded frames (``n`` in the clip) and located faces."""
    T = input_config.num_frames
    if n < T:
        warnings.append(f"the clip has only {n} frame{'s' if n > 1 else ''}; the model sees the last one repeated to make {T}")
    used = sorted(set(clip_indices).union(*(w.indices for w in spans)))
    clip_unique = sorted(set(clip_indices))
    hits = sum(meta_of[i].confidence is not None for i in clip_unique)
    if hits == 0 and not any(m.confidence is not None for m in metas):
        if fallback == "error":
            raise NoFaceFoundError(f"no face found in the {len(metas)} sampled frames of {Path(info.path).name}")
        status = "no_face"
        warnings.append("no face found; the model sees the centre of each frame instead")
    elif hits * 2 >= len(clip_unique):
        status = "ok"
    else:
        status = "partial"
    if status != "no_face":
        if no_face:
            where = ", ".join(f"{a:.1f}–{b:.1f} s" for a, b in no_face)
            first, last = meta_of[clip_unique[0]].time_s, meta_of[clip_unique[-1]].time_s
            warnings.append(f"no face {where}; the model's frames come from {first:.1f}–{last:.1f} s")
        boxed = sum(meta_of[i].box is not None for i in clip_unique)
        if hits < boxed:
            warnings.append(f"face detected in {hits} of {len(clip_unique)} model frames; {boxed - hits} hold the box "
                            f"across a gap of at most {tracking.max_hold_s:g} s between detections")
        if boxed < len(clip_unique):
            at_centre = centre_crops(clip_unique, meta_of, info)
            near = len(clip_unique) - boxed - at_centre
            warnings.append(f"{len(clip_unique) - boxed} model frames have no face box: "
                            + "; ".join(part for part in (
                                f"{near} cut where the face was detected within {tracking.max_hold_s:g} s" if near else "",
                                f"{at_centre} show the frame's centre" if at_centre else "") if part))

    size = input_config.image_size
    crops = {i: crop_square(decoded[i].image, _scaled(meta_of[i].crop, decoded[i].scale), size, input_config.resize)
             for i in used}
    slot = {i: k for k, i in enumerate(used)}
    pixels = torch.from_numpy(np.stack([np.asarray(crops[i]) for i in used])).permute(0, 3, 1, 2)  # uint8

    def model_input(indices: Sequence[int]) -> torch.Tensor:
        x01 = pixels[[slot[i] for i in indices]].float().div_(255.0)
        return input_config.normalize(x01)

    video = model_input(clip_indices).unsqueeze(0)
    window_batch = None
    if spans:
        window_batch = WindowBatch(
            video=torch.stack([model_input(w.indices) for w in spans]),
            windows=spans,
            frames=metas,
        )
    done = time.perf_counter()
    timings = dict(shared, crop_s=done - detect_done, total_s=done - start)  # crop_s: tracking, crops, tensors
    timings = {k: round(v, 4) for k, v in timings.items()}
    log.info("%s: %s, %d frames decoded, %s", Path(info.path).name, status, len(metas), timings)
    return IngestResult(
        video=video,
        crops=[crops[i] for i in clip_indices],
        frames=[meta_of[i] for i in clip_indices],
        status=status,
        source=info,
        input_config=input_config,
        warnings=warnings,
        timings=timings,
        windows=window_batch,
        no_face_spans=no_face,
    )


def centre_crops(indices: Sequence[int], meta_of: Dict[int, FrameMeta], info: VideoInfo) -> int:
    """How many of these frames are cut from the frame's centre (no face detected near them in time)."""
    centre = _rounded(center_region((info.width, info.height)))
    return sum(meta_of[i].box is None and meta_of[i].crop == centre for i in indices)


def _no_face_spans(metas: List[FrameMeta], duration_s: Optional[float]) -> List[Tuple[float, float]]:
    """The stretches of the clip (seconds) whose sampled frames have no face box, from the clip's start or
    the first frame without one to the next frame with one, or the clip's end."""
    spans, start = [], None
    for k, m in enumerate(metas):
        if m.box is None and start is None:
            start = 0.0 if k == 0 else m.time_s
        elif m.box is not None and start is not None:
            spans.append((round(start, 2), round(m.time_s, 2)))
            start = None
    if start is not None:
        end = duration_s if duration_s else metas[-1].time_s
        spans.append((round(start, 2), round(max(end, start), 2)))
    return spans


def _detect(detector: FaceDetector, frames: List[DecodedFrame]):
    """Per decoded frame, its faces (:class:`~dferclip.video.tracking.FrameFaces`: boxes in source pixels, each
    face's appearance, the frame's colour signature), and the seconds it took."""
    start = time.perf_counter()
    found = detector.detect([f.image for f in frames])
    out = []
    for f, dets in zip(frames, found):
        looks = [appearance(f.image, box) for box, _ in dets]
        out.append(FrameFaces(f.time_s, [Detection(tuple(v / f.scale for v in box), score) for box, score in dets],
                              looks, frame_signature(f.image)))
    return out, time.perf_counter() - start


def _window_spans(frame_times, input_config: InputConfig, spec: WindowSpec, limits: Limits, warnings: List[str]) -> List[Window]:
    """Sliding windows, fewer when their frames would exceed ``limits.max_kept_frames``."""
    T = input_config.num_frames
    affordable = max(1, (limits.max_kept_frames - T) // T)
    if spec.max_windows > affordable:
        warnings.append(f"at most {affordable} windows fit the frame limit ({limits.max_kept_frames} frames)")
        spec = WindowSpec(spec.length_s, spec.stride_s, affordable)
    return sliding_windows(frame_times, T, spec, input_config.sampler)


def _locate_faces(
    frames: List[DecodedFrame],
    track: Optional[FaceTrack],
    info: VideoInfo,
    margin: float,
    tracking: TrackingConfig,
) -> List[FrameMeta]:
    """Per frame: the track's face box (detected or held) and the square to crop (the centre without a track)."""
    frame_size = (info.width, info.height)
    times = [f.time_s for f in frames]
    centre = _rounded(center_region(frame_size))
    if track is None:
        return [FrameMeta(f.index, f.time_s, None, centre, None, False) for f in frames]
    boxes, filled = fill_track(track, times, tracking.max_hold_s)
    cuts = crop_boxes(times, [None if d is None else d.box for d in track.detections], tracking.max_hold_s)
    metas = []
    for f, det, box, was_filled, where in zip(frames, track.detections, boxes, filled, cuts):
        metas.append(
            FrameMeta(
                index=f.index,
                time_s=f.time_s,
                box=None if box is None else _rounded(box),
                crop=centre if where is None else _rounded(crop_region(where, margin, frame_size)),
                confidence=None if det is None else round(det.score, 4),
                filled=was_filled,
            )
        )
    return metas


def _rounded(box) -> List[float]:
    return [round(float(v), 2) for v in box]


def _scaled(box: Sequence[float], scale: float) -> List[float]:
    return [v * scale for v in box]
