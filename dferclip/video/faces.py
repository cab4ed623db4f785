"""Face detection, main-face tracking and square face crops.

The default detector is MTCNN with the weights that ship inside the ``facenet-pytorch`` wheel
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``). The three small networks and the cascade are defined
here, so only the weight files are needed: facenet-pytorch's own ``__init__`` imports ``requests``,
which a ``--no-deps`` install lacks, and its cascade resamples each candidate box in a Python loop.
This cascade cuts every candidate of a batch in one ``roi_align`` call, passes fewer candidates to the
later stages and searches the finest pyramid levels only where the coarser ones found no face.
"""
from __future__ import annotations

import bisect
import importlib.util
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

Box = Tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
TIME_EPS = 1e-4  # seconds: frame times closer than this are the same frame


class Detection(NamedTuple):
    box: Box
    score: float


class FaceDetector(ABC):
    """Finds faces in RGB uint8 images (H, W, 3); returns, per image, a list of (box, score)."""

    @abstractmethod
    def detect(self, images: Sequence[np.ndarray]) -> List[List[Detection]]:
        ...


# --- MTCNN ---------------------------------------------------------------------------------------


def _facenet_weights_dir() -> Path:
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the MTCNN face detector needs its weights from facenet-pytorch: pip install --no-deps facenet-pytorch")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _build_nets():
    """PNet, RNet, ONet with facenet-pytorch's weights (layer names match its state dicts)."""
    import torch
    from torch import nn

    class _Flatten(nn.Module):
        # the weights come from Caffe models that flatten (C, W, H) rather than (C, H, W)
        def forward(self, x):
            return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)

    class PNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)[:, 1]

    class RNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.flatten = _Flatten()
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu4(self.dense4(self.flatten(self.prelu3(self.conv3(x)))))
            return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)[:, 1]

    class ONet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.flatten = _Flatten()
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2 = nn.Linear(256, 2), nn.Linear(256, 4)  # landmarks (dense6_3) unused

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu5(self.dense5(self.flatten(self.prelu4(self.conv4(x)))))
            return self.dense6_2(x), torch.softmax(self.dense6_1(x), dim=1)[:, 1]

    folder = _facenet_weights_dir()
    nets = []
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        net = cls()
        state = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("dense6_3.")}
        net.load_state_dict(state)
        nets.append(net.eval())
    return nets


# Overlap above which candidates from different pyramid levels are merged before the second stage:
# stricter than the usual 0.7, it halves the second stage's work with the same detections on our tests.
_MERGE_IOU = 0.4
RESIZE_FILTERS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC"}  # InputConfig.resize -> PIL filter


class MTCNNDetector(FaceDetector):
    """MTCNN (Zhang et al. 2016) on CPU or GPU, batched over frames.

    Images are first downscaled so their long side is at most ``detect_side`` pixels; faces down to
    ``min_face`` pixels at that size are searched for (20 px at 320 px wide is 11% of a 16:9 frame's
    height). The image pyramid is searched coarse to fine: its ``fine_levels`` finest levels (faces from
    ``min_face`` to about twice that) only in images where the coarser levels found no face. When no
    image of a same-size group has a face, the group is searched again at ``retry_side`` (None: no
    retry) for faces smaller than ``min_face`` at ``detect_side``. ``thresholds`` are the three stages'
    face-probability cut-offs; at most ``max_candidates`` boxes per image reach the last stage;
    ``batch_size`` images go through the networks at once. They run on torch's threads, which are the
    process's to set (``torch.set_num_threads`` once, at start-up): a detector never changes them, since
    the setting is global and detection runs on worker threads beside other requests.
    """

    def __init__(
        self,
        detect_side: int = 320,
        min_face: int = 20,
        fine_levels: int = 2,
        retry_side: Optional[int] = 640,
        thresholds: Tuple[float, float, float] = (0.7, 0.7, 0.7),
        factor: float = 0.709,
        max_candidates: int = 8,
        batch_size: int = 32,
        device: str = "cpu",
    ):
        self.detect_side = detect_side
        self.min_face = max(12, min_face)
        self.fine_levels = fine_levels
        self.retry_side = retry_side
        self.thresholds = thresholds
        self.factor = factor
        self.max_candidates = max_candidates
        self.batch_size = batch_size
        self.device = device
        self._nets = None

    def _load(self):
        if self._nets is None:
            self._nets = [net.to(self.device) for net in _build_nets()]
        return self._nets

    def detect(self, images: Sequence[np.ndarray]) -> List[List[Detection]]:
        results: List[List[Detection]] = [[] for _ in images]
        by_size: dict = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.shape[:2], []).append(i)
        for members in by_size.values():
            for i, dets in zip(members, self._detect_group([images[i] for i in members])):
                results[i] = dets
        return results

    def _detect_group(self, images: List[np.ndarray]) -> List[List[Detection]]:
        """Detect in same-size images; boxes in the images' own pixels."""
        h, w = images[0].shape[:2]
        scale = min(1.0, self.detect_side / max(h, w))
        small = _resize_all(images, scale)
        levels = self._levels(min(small.shape[1:3]))
        found = self._run(small, scale, levels[self.fine_levels :])
        missing = [k for k, dets in enumerate(found) if not dets]
        if missing and self.fine_levels:
            for k, dets in zip(missing, self._run(small[missing], scale, levels[: self.fine_levels])):
                found[k] = dets
        if not any(found) and self.retry_side and max(h, w) > self.detect_side:
            scale = min(1.0, self.retry_side / max(h, w))
            large = _resize_all(images, scale)
            covered = self.min_face * scale * max(h, w) / self.detect_side  # face sizes already searched
            finer = [s for s in self._levels(min(large.shape[1:3])) if 12 / s < covered]
            found = self._run(large, scale, finer)
        return found

    def _levels(self, short_side: int) -> List[float]:
        """Pyramid scales, finest first: 12 px PNet cells match faces of 12 / scale pixels."""
        scales, scale = [], 12.0 / self.min_face
        while short_side * scale >= 12:
            scales.append(scale)
            scale *= self.factor
        return scales

    def _run(self, batch: np.ndarray, scale: float, levels: List[float]) -> List[List[Detection]]:
        found = []
        for start in range(0, len(batch), self.batch_size):
            for dets in self._detect_batch(batch[start : start + self.batch_size], levels):
                found.append([Detection(tuple(v / scale for v in box), score) for box, score in dets])
        return found

    def _detect_batch(self, batch: np.ndarray, levels: List[float]) -> List[List[Tuple[Box, float]]]:
        import torch
        from torchvision.ops import batched_nms

        pnet, rnet, onet = self._load()
        t1, t2, t3 = self.thresholds
        n = len(batch)
        if not levels:
            return [[] for _ in range(n)]
        with torch.inference_mode():
            images = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float()
            h, w = images.shape[2:]

            # stage 1: PNet over the pyramid levels, one pass per level for the whole batch
            boxes, scores, owners, offsets = [], [], [], []
            for scale in levels:
                size = (math.ceil(h * scale), math.ceil(w * scale))
                level = torch.nn.functional.interpolate(images, size=size, mode="area")
                reg, prob = pnet((level - 127.5) * 0.0078125)
                owner, row, col = torch.nonzero(prob >= t1, as_tuple=True)
                if len(owner):
                    cell = torch.stack([col, row, col, row], dim=1).float() * 2  # 12x12 cells, stride 2
                    cell[:, 2:] += 11
                    box = torch.floor((cell + 1) / scale)
                    score = prob[owner, row, col]
                    keep = batched_nms(box, score, owner, 0.5)
                    boxes.append(box[keep]), scores.append(score[keep]), owners.append(owner[keep])
                    offsets.append(reg[owner, :, row, col][keep])
            if not boxes:
                return [[] for _ in range(n)]
            box, score, owner, offset = torch.cat(boxes), torch.cat(scores), torch.cat(owners), torch.cat(offsets)
            keep = batched_nms(box, score, owner, _MERGE_IOU)
            box, owner, offset = box[keep], owner[keep], offset[keep]
            side = box[:, 2:] - box[:, :2]
            box = _square(box + offset * torch.cat([side, side], dim=1))

            # stage 2: RNet on 24x24 cuts of the candidates
            box, score, owner = self._refine(rnet, images, box, owner, 24, t2)
            keep = _top_per_image(batched_nms(box, score, owner, 0.5), owner, self.max_candidates)
            box, owner = _square(box[keep]), owner[keep]

            # stage 3: ONet on 48x48 cuts
            box, score, owner = self._refine(onet, images, box, owner, 48, t3)
            keep = _nms_min(box, score, owner, 0.7)
            box, score, owner = box[keep], score[keep], owner[keep]

        out: List[List[Tuple[Box, float]]] = [[] for _ in range(n)]
        for b, s, o in zip(box.tolist(), score.tolist(), owner.tolist()):
            out[o].append((tuple(b), s))
        for dets in out:
            dets.sort(key=lambda d: -d[1])
        return out

    @staticmethod
    def _refine(net, images, box, owner, size, threshold):
        import torch
        from torchvision.ops import roi_align

        if len(box) == 0:
            return box, box.new_zeros(0), owner
        rois = torch.cat([owner[:, None].float(), box], dim=1)
        cuts = roi_align(images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        reg, prob = net((cuts - 127.5) * 0.0078125)
        keep = prob > threshold
        box, reg, prob, owner = box[keep], reg[keep], prob[keep], owner[keep]
        side = box[:, 2:] - box[:, :2]
        return box + reg * torch.cat([side, side], dim=1), prob, owner


def _resize_all(images: List[np.ndarray], scale: float) -> np.ndarray:
    """Same-size RGB images as one uint8 batch (N, H, W, 3), resized by ``scale`` (area filter)."""
    import cv2

    if scale == 1.0:
        return np.stack(images)
    h, w = images[0].shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in images])


def _square(box):
    """Boxes grown to squares about their centres."""
    import torch

    centre = (box[:, :2] + box[:, 2:]) / 2
    half = torch.max(box[:, 2:] - box[:, :2], dim=1).values[:, None] / 2
    return torch.cat([centre - half, centre + half], dim=1)


def _top_per_image(keep, owner, k):
    """Of NMS survivors (sorted by score), at most ``k`` per image."""
    import torch

    counts: dict = {}
    chosen = []
    for i in keep.tolist():
        o = int(owner[i])
        if counts.get(o, 0) < k:
            counts[o] = counts.get(o, 0) + 1
            chosen.append(i)
    return torch.tensor(chosen, dtype=torch.long)


def _nms_min(box, score, owner, threshold):
    """NMS by intersection over the smaller box (drops a face box nested inside another)."""
    import torch

    order = torch.argsort(score, descending=True).tolist()
    b, own = box.tolist(), owner.tolist()
    kept: List[int] = []
    for i in order:
        ok = True
        for j in kept:
            if own[i] != own[j]:
                continue
            ix = min(b[i][2], b[j][2]) - max(b[i][0], b[j][0])
            iy = min(b[i][3], b[j][3]) - max(b[i][1], b[j][1])
            if ix > 0 and iy > 0:
                smaller = min(_area(b[i]), _area(b[j]))
                if smaller > 0 and ix * iy / smaller > threshold:
                    ok = False
                    break
        if ok:
            kept.append(i)
    return torch.tensor(kept, dtype=torch.long)


def _area(b: Sequence[float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


# --- main face across a clip ---------------------------------------------------------------------


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _side(b: Box) -> float:
    return math.sqrt(max(_area(b), 1e-6))


def _centre(b: Box) -> Tuple[float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def centre_shift(a: Box, b: Box) -> float:
    """How far apart two face boxes' centres are, in sizes of the larger face."""
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    return math.hypot(ax - bx, ay - by) / max(_side(a), _side(b))


def size_ratio(a: Box, b: Box) -> float:
    """The larger face box's side over the smaller's (1 or more)."""
    return max(_side(a), _side(b)) / min(_side(a), _side(b))


def shared_boxes(a: dict, b: dict, min_iou: float = 0.5) -> int:
    """On how many frames two faces' boxes (frame index -> box) overlap by more than ``min_iou``."""
    return sum(iou(box, b[i]) > min_iou for i, box in a.items() if i in b)


@dataclass
class FaceTrack:
    """One person's face over the frames: a detection or None per frame."""

    detections: List[Optional[Detection]]
    score: float = 0.0
    id: int = 0  # the person's number in the clip, by first appearance (dferclip.video.tracking)
    look: Optional[np.ndarray] = None  # the face's mean appearance descriptor (dferclip.video.tracking)

    @property
    def hits(self) -> int:
        return sum(d is not None for d in self.detections)


@dataclass(frozen=True)
class TrackingConfig:
    """How detections in successive sampled frames are linked into one person's track.

    A detection continues a track when its centre is within ``max_shift`` face sizes of the track's
    last box, plus ``speed`` face sizes per second elapsed (sampled frames may be seconds apart), and
    its size is within ``max_size_ratio`` of it. Detections below ``min_score`` are ignored. A frame
    without a detection holds the track's box only inside a gap of at most ``max_hold_s`` between two
    detections (see :func:`face_boxes`): never before the face appears, after it leaves, or longer.
    """

    min_score: float = 0.9
    max_shift: float = 0.75
    speed: float = 1.0
    max_size_ratio: float = 1.6
    max_hold_s: float = 0.5
    # every face (dferclip.video.tracking): appearance distances are 1 - the descriptors' dot product
    link_max_distance: float = 0.25  # a detection this unlike a track does not continue it
    appearance_weight: float = 2.0  # face sizes of shift one unit of appearance distance is worth when linking
    reid_max_distance: float = 0.16  # tracklets further apart than this are different people
    cut_distance: float = 0.35  # a change of the whole frame's colours beyond this is a shot cut
    max_link_gap_s: float = 1.0  # a track unseen for longer is continued by appearance only
    min_hits: int = 2  # tracks detected on fewer examined frames are dropped as spurious,
    min_track_s: float = 0.5  # and so are those seen for a shorter time (a half-hidden face at a crossing)
    scan_fps: float = 5.0  # examined frames per second of the clip, besides those the models sample
    max_scan_frames: int = 150


def closest_first(pairs: Sequence[Tuple[float, int, int]]) -> List[Tuple[int, int]]:
    """One-to-one (track, detection) matches from (cost, track, detection) candidates, the cheapest first."""
    used_tracks, used_dets, out = set(), set(), []
    for _, k, j in sorted(pairs):
        if k not in used_tracks and j not in used_dets:
            used_tracks.add(k), used_dets.add(j)
            out.append((k, j))
    return out


def link_tracks(
    detections: Sequence[Sequence[Detection]],
    times: Sequence[float],
    config: TrackingConfig = TrackingConfig(),
) -> List[FaceTrack]:
    """Greedy frame-to-frame linking of detections into tracks (closest pairs first)."""
    tracks: List[FaceTrack] = []
    last: List[Tuple[int, Box]] = []  # per track: frame of its last detection, that box
    n = len(detections)
    for t, dets in enumerate(detections):
        dets = [d for d in dets if d.score >= config.min_score]
        pairs = []
        for k, (tf, tb) in enumerate(last):
            allowed = config.max_shift + config.speed * abs(times[t] - times[tf])
            for j, d in enumerate(dets):
                if size_ratio(tb, d.box) > config.max_size_ratio:
                    continue
                shift = centre_shift(tb, d.box)
                if shift <= allowed:
                    pairs.append((shift, k, j))
        matched = closest_first(pairs)
        for k, j in matched:
            tracks[k].detections[t] = dets[j]
            last[k] = (t, dets[j].box)
        used_dets = {j for _, j in matched}
        for j, d in enumerate(dets):
            if j not in used_dets:
                track = FaceTrack([None] * n)
                track.detections[t] = d
                tracks.append(track)
                last.append((t, d.box))
    return tracks


def main_face_track(
    detections: Sequence[Sequence[Detection]],
    times: Sequence[float],
    frame_size: Tuple[int, int],
    config: TrackingConfig = TrackingConfig(),
) -> Optional[FaceTrack]:
    """The clip's main face: the track with the largest sum of size x confidence over its frames.

    Size is the face's side relative to the frame's short side, so a face present in many frames
    (persistence), large and confidently detected wins over one that is largest in a single frame.
    """
    short = min(frame_size)
    best = None
    for track in link_tracks(detections, times, config):
        track.score = sum(_side(d.box) / short * d.score for d in track.detections if d is not None)
        if best is None or track.score > best.score:
            best = track
    return best


def face_boxes(times: Sequence[float], detected: Sequence[Optional[Box]], max_hold_s: float,
               at: Optional[Sequence[float]] = None) -> Tuple[List[Optional[Box]], List[bool]]:
    """Where a face box may be shown: the one rule for crops, the annotated video and the live view.

    ``times`` are the examined frames' times (sorted), ``detected`` the face's box on each or None where
    the detector missed it. At each time of ``at`` (default: ``times``): the detected box on a frame that
    has one; between two detections at most ``max_hold_s`` apart, the box interpolated linearly in time,
    *held* when an examined frame between them missed the face; None elsewhere (before the first
    detection, after the last, across longer gaps). Returns (boxes, held flags).
    """
    hits = [i for i, b in enumerate(detected) if b is not None]
    hit_times = [times[i] for i in hits]
    miss_times = [t for t, b in zip(times, detected) if b is None]
    boxes: List[Optional[Box]] = []
    held: List[bool] = []
    for t in times if at is None else at:
        j = bisect.bisect_left(hit_times, t - TIME_EPS)
        if j < len(hits) and hit_times[j] <= t + TIME_EPS:
            boxes.append(tuple(detected[hits[j]]))
            held.append(False)
            continue
        if 0 < j < len(hits) and hit_times[j] - hit_times[j - 1] <= max_hold_s + TIME_EPS:
            t0, t1 = hit_times[j - 1], hit_times[j]
            w = (t - t0) / (t1 - t0)
            a, b = detected[hits[j - 1]], detected[hits[j]]
            boxes.append(tuple(x + w * (y - x) for x, y in zip(a, b)))
            k = bisect.bisect_right(miss_times, t0 + TIME_EPS)
            held.append(k < len(miss_times) and miss_times[k] < t1 - TIME_EPS)  # a miss inside the gap
        else:
            boxes.append(None)
            held.append(False)
    return boxes, held


def crop_boxes(times: Sequence[float], detected: Sequence[Optional[Box]], max_hold_s: float) -> List[Optional[Box]]:
    """Where the model's crop is cut on each frame: the box :func:`face_boxes` shows, else the detection nearest
    in time when it is at most ``max_hold_s`` away (a face the detector missed, shown without a box), else None
    (the frame's centre)."""
    shown, _ = face_boxes(times, detected, max_hold_s)
    hits = [(t, b) for t, b in zip(times, detected) if b is not None]
    out: List[Optional[Box]] = []
    for t, box in zip(times, shown):
        if box is None and hits:
            near_t, near_box = min(hits, key=lambda h: abs(h[0] - t))
            box = tuple(near_box) if abs(near_t - t) <= max_hold_s + TIME_EPS else None
        out.append(box)
    return out


def fill_track(track: FaceTrack, times: Sequence[float],
               max_hold_s: float = 0.5) -> Tuple[List[Optional[Box]], List[bool]]:
    """A box for the track's frames by :func:`face_boxes`: detected ones as they are, a missed one held only
    inside a gap of at most ``max_hold_s`` between detections. Returns (boxes, held flags)."""
    if not any(d is not None for d in track.detections):
        raise ValueError("fill_track needs a track with at least one detection")
    return face_boxes(times, [None if d is None else d.box for d in track.detections], max_hold_s)


# --- crops ---------------------------------------------------------------------------------------


def crop_region(box: Box, margin: float, frame_size: Tuple[int, int]) -> Box:
    """The square around a face box: side = longer box side x (1 + 2 x margin), same centre.

    The square is shifted to lie inside the frame when it fits; a square larger than the frame is
    centred on the face and the part outside the frame is padded black by :func:`crop_square`.
    """
    width, height = frame_size
    cx, cy = _centre(box)
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin)
    x0, y0 = cx - side / 2, cy - side / 2
    if side <= width:
        x0 = min(max(x0, 0.0), width - side)
    if side <= height:
        y0 = min(max(y0, 0.0), height - side)
    return (x0, y0, x0 + side, y0 + side)


def center_region(frame_size: Tuple[int, int]) -> Box:
    """The largest centred square of the frame (the fallback when no face is found)."""
    width, height = frame_size
    side = min(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    return (x0, y0, x0 + side, y0 + side)


def crop_square(image: np.ndarray, region: Box, size: int, resize: str = "bilinear"):
    """Cut ``region`` (pixel coordinates, may extend past the borders: padded black) out of an RGB
    image and resize it to ``size`` x ``size`` with PIL ``resize`` ("bilinear" or "bicubic", antialiased),
    as the model's loader does. Returns a PIL image."""
    from PIL import Image

    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in region)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    inside = image[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
    if (x0, y0, x1, y1) != (max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)):
        canvas = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        oy, ox = max(-y0, 0), max(-x0, 0)
        canvas[oy : oy + inside.shape[0], ox : ox + inside.shape[1]] = inside
        inside = canvas
    if resize not in RESIZE_FILTERS:
        raise ValueError(f"unknown resize {resize!r}; known: {', '.join(RESIZE_FILTERS)}")
    return Image.fromarray(np.ascontiguousarray(inside)).resize((size, size), getattr(Image, RESIZE_FILTERS[resize]))
