"""Every face in a clip as tracks: one identity per person, across occlusions, exits, crossings and cuts.

Two steps over the examined frames (a regular scan of the clip plus the frames the models sample):

1. **Tracklets.** Detections in successive frames are linked closest first, by position (as
   :func:`~dferclip.video.faces.link_tracks`) and appearance together: a detection continues a tracklet only
   when it is near the tracklet's last box *and* looks like it, so two people who cross keep their own
   tracklets. A shot cut (the whole frame's colours change at once) ends every tracklet, and so does a gap
   longer than ``TrackingConfig.max_link_gap_s``.
2. **Identities.** Tracklets that never share a frame are merged, most alike first, while their appearances
   stay within ``TrackingConfig.reid_max_distance``: a face that leaves and comes back, or is seen again after
   a cut, keeps its identity.

Appearance is a descriptor with no learned weights (a 16 x 16 grey thumbnail of the face, standardised, and a
hue-saturation histogram of the face box), computed from the decoded frame as detection runs, so tracking adds
no model pass. None of the installed packages ships face-embedding weights (facenet-pytorch's
InceptionResnetV1 downloads them at run time; ArcFace weights are for non-commercial use), and a face
embedding per detection would cost a network pass each; the descriptor tells apart the people of one clip,
which is all re-identification here needs. The main face is chosen as before: the track with the largest sum of
size x confidence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .faces import Detection, FaceTrack, TrackingConfig, _centre, _side, centre_shift, closest_first, size_ratio

THUMB_SIDE = 16
HUE_BINS, SAT_BINS = 12, 4


def appearance(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """A unit-norm descriptor of the face at ``box`` (pixels of ``image``, RGB uint8): the dot product of two is
    the mean of their thumbnails' correlation and their colour histograms' Bhattacharyya coefficient."""
    import cv2

    h, w = image.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, max(x0 + 1, int(math.ceil(box[2])))), min(h, max(y0 + 1, int(math.ceil(box[3]))))
    face = np.ascontiguousarray(image[y0:y1, x0:x1])
    grey = cv2.resize(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), (THUMB_SIDE, THUMB_SIDE),
                      interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    grey -= grey.mean()
    grey /= max(float(np.linalg.norm(grey)), 1e-6)
    hsv = cv2.cvtColor(face, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [HUE_BINS, SAT_BINS], [0, 180, 0, 256]).ravel()
    hist = np.sqrt(hist / max(float(hist.sum()), 1e-6))
    return np.concatenate([grey, hist]).astype(np.float32) * np.float32(math.sqrt(0.5))


def frame_signature(image: np.ndarray) -> np.ndarray:
    """The whole frame's colours (square-rooted hue-saturation-value histogram), to find shot cuts."""
    import cv2

    small = cv2.resize(image, (64, 36), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    return np.sqrt(hist / max(float(hist.sum()), 1e-6)).astype(np.float32)


def is_cut(before: np.ndarray, after: np.ndarray, config: TrackingConfig) -> bool:
    """Whether two successive examined frames are from different shots."""
    return float(before @ after) < 1 - config.cut_distance


@dataclass
class FrameFaces:
    """One examined frame: its time, its detections, each detection's appearance, the frame's signature."""

    time_s: float
    detections: List[Detection]
    appearances: List[np.ndarray]
    signature: Optional[np.ndarray] = None


@dataclass
class _Tracklet:
    hits: dict = field(default_factory=dict)  # frame position -> (detection, appearance)
    last: int = -1

    def look(self, recent: Optional[int] = None) -> np.ndarray:
        """The tracklet's appearance: the normalised mean of its detections' (of its ``recent`` last ones)."""
        keys = sorted(self.hits)[-recent:] if recent else self.hits
        mean = np.mean([self.hits[t][1] for t in keys], axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-6)


def _tracklets(frames: Sequence[FrameFaces], config: TrackingConfig) -> List[_Tracklet]:
    open_: List[_Tracklet] = []
    done: List[_Tracklet] = []
    for t, frame in enumerate(frames):
        if t and frames[t - 1].signature is not None and frame.signature is not None \
                and is_cut(frames[t - 1].signature, frame.signature, config):
            done += open_
            open_ = []
        # tracklets unseen for too long are no longer continued by position
        keep = []
        for tr in open_:
            (keep if frame.time_s - frames[tr.last].time_s <= config.max_link_gap_s + 1e-6 else done).append(tr)
        open_ = keep
        kept = [(d, a) for d, a in zip(frame.detections, frame.appearances) if d.score >= config.min_score]
        pairs = []
        for k, tr in enumerate(open_):
            last_box = tr.hits[tr.last][0].box
            look = tr.look(recent=5)
            allowed = config.max_shift + config.speed * (frame.time_s - frames[tr.last].time_s)
            for j, (d, a) in enumerate(kept):
                if size_ratio(last_box, d.box) > config.max_size_ratio:
                    continue
                shift = centre_shift(last_box, d.box)
                distance = 1.0 - float(look @ a)
                if shift <= allowed and distance <= config.link_max_distance:
                    pairs.append((shift + config.appearance_weight * distance, k, j))
        matched = closest_first(pairs)
        for k, j in matched:
            open_[k].hits[t] = kept[j]
            open_[k].last = t
        used_d = {j for _, j in matched}
        for j, hit in enumerate(kept):
            if j not in used_d:
                open_.append(_Tracklet({t: hit}, t))
    return done + open_


def _identities(tracklets: List[_Tracklet], config: TrackingConfig) -> List[_Tracklet]:
    """Tracklets that never share a frame merged while alike, most alike first (average linkage)."""
    groups = list(tracklets)
    looks = [g.look() for g in groups]
    while True:
        best = None
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if groups[i].hits.keys() & groups[j].hits.keys():
                    continue
                distance = 1.0 - float(looks[i] @ looks[j])
                if distance <= config.reid_max_distance and (best is None or distance < best[0]):
                    best = (distance, i, j)
        if best is None:
            return groups
        _, i, j = best
        merged = _Tracklet({**groups[i].hits, **groups[j].hits}, max(groups[i].last, groups[j].last))
        groups = [g for k, g in enumerate(groups) if k not in (i, j)] + [merged]
        looks = [v for k, v in enumerate(looks) if k not in (i, j)] + [merged.look()]


def track_faces(frames: Sequence[FrameFaces], frame_size: Tuple[int, int],
                config: TrackingConfig = TrackingConfig()) -> Tuple[List[FaceTrack], Optional[int]]:
    """Every face of the examined ``frames`` (in time order) as :class:`FaceTrack` s, numbered by first appearance
    (``track.id``), and the main face's id (None without a face). A track's ``detections`` align with ``frames``."""
    groups = _identities(_tracklets(frames, config), config)
    # a face seen on too few frames or too briefly is dropped as spurious (a false detection, a fragment of a face
    # half hidden by another), unless no face is seen longer
    def lasting(g: _Tracklet) -> bool:
        return len(g.hits) >= config.min_hits and frames[max(g.hits)].time_s - frames[min(g.hits)].time_s >= \
            config.min_track_s - 1e-6

    if any(lasting(g) for g in groups):
        groups = [g for g in groups if lasting(g)]
    groups.sort(key=lambda g: (min(g.hits), _centre(g.hits[min(g.hits)][0].box)[0]))
    short = min(frame_size)
    tracks = []
    for k, g in enumerate(groups):
        detections: List[Optional[Detection]] = [None] * len(frames)
        for t, (d, _) in g.hits.items():
            detections[t] = d
        track = FaceTrack(detections, id=k, look=g.look())
        track.score = sum(_side(d.box) / short * d.score for d in detections if d is not None)
        tracks.append(track)
    main = max(tracks, key=lambda tr: tr.score).id if tracks else None
    return tracks, main


def assign_detections(tracks: Sequence[FaceTrack], times: Sequence[float], time_s: float,
                      detections: Sequence[Detection], appearances: Sequence[np.ndarray],
                      config: TrackingConfig = TrackingConfig()) -> List[Optional[Detection]]:
    """For a frame examined after tracking (at ``time_s``), each track's detection there or None: the detection
    nearest the track's closest box in time (within ``max_link_gap_s``) that also looks like the track."""
    out: List[Optional[Detection]] = [None] * len(tracks)
    pairs = []
    for k, track in enumerate(tracks):
        hits = [(abs(times[t] - time_s), d) for t, d in enumerate(track.detections) if d is not None]
        if not hits:
            continue
        gap, near = min(hits, key=lambda h: h[0])
        if gap > config.max_link_gap_s + 1e-6:
            continue
        for j, (d, a) in enumerate(zip(detections, appearances)):
            if d.score < config.min_score:
                continue
            shift = centre_shift(near.box, d.box)
            distance = 1.0 - float(track.look @ a) if track.look is not None else 0.0
            if shift <= config.max_shift + config.speed * gap and distance <= config.link_max_distance:
                pairs.append((shift + config.appearance_weight * distance, k, j))
    for k, j in closest_first(pairs):
        out[k] = detections[j]
    return out
