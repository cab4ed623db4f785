"""Face analysis for FineCLIPER's middle level: per-frame landmarks and face-region (parsing) maps, rendered
as images that the landmark and parsing encoders read.

The paper uses FaceXFormer (68 landmarks, 11-class LaPa parsing). Its weights live on the Hub and it builds a
Swin-B that downloads ImageNet weights, so the offline default here is MediaPipe Face Mesh (``mediapipe``
0.10.21, the model ships inside the wheel): 468 landmarks, and the mesh's region outlines (face oval, brows,
eyes, nose, lips) filled into a LaPa-style class map as a parsing proxy (no hair class). Any model that
implements :class:`FaceAnalyzer` (e.g. FaceXFormer) can replace it.

Renders (as in the paper's Fig. 1/2): the landmark image is the face frame with the points drawn as yellow
dots; the parsing image is the class map in :data:`PARSING_PALETTE` colours. Results are cached per clip on
disk (:class:`AnalysisCache`), keyed by a hash of the frames' pixels and the analyzer's settings.
"""
from __future__ import annotations

import hashlib
import json
import atexit
import logging
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import DferclipError
from ..files import atomic_write

log = logging.getLogger(__name__)

# LaPa's 11 classes (FaceXFormer's parsing output), in its order. "left"/"right" are the subject's.
PARSING_CLASSES = ("background", "skin", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "nose",
                   "upper_lip", "inner_mouth", "lower_lip", "hair")
PARSING_PALETTE = np.array([
    (0, 0, 0), (255, 204, 153), (153, 51, 0), (204, 102, 0), (0, 102, 255), (0, 204, 255), (255, 0, 153),
    (255, 51, 51), (102, 0, 51), (204, 0, 0), (102, 51, 153)], dtype=np.uint8)
LANDMARK_COLOUR = (255, 255, 0)


class FaceAnalysisError(DferclipError):
    """The face-analysis model is missing or failed."""


@dataclass
class FrameAnalysis:
    """One frame: landmarks ``(N, 2)`` float pixel (x, y), or None when no face was found; parsing ``(H, W)``
    uint8 class map over :data:`PARSING_CLASSES` (all background when no face was found)."""

    landmarks: Optional[np.ndarray]
    parsing: np.ndarray

    @property
    def face_found(self) -> bool:
        return self.landmarks is not None


@runtime_checkable
class FaceAnalyzer(Protocol):
    """What the middle level needs from a face-analysis model."""

    name: str

    def settings(self) -> dict:
        """Everything that changes the output (part of cache keys)."""

    def analyze(self, frames: Sequence[np.ndarray]) -> list[FrameAnalysis]:
        """RGB uint8 frames ``(H, W, 3)`` -> one :class:`FrameAnalysis` each."""


# --- MediaPipe Face Mesh -------------------------------------------------------------------------------
def _loops(edges) -> list[list[int]]:
    """Closed loops of an undirected edge set whose nodes all have degree 2, as ordered node lists."""
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    seen, loops = set(), []
    for start in sorted(adj):
        if start in seen:
            continue
        loop, prev, node = [start], None, start
        seen.add(start)
        while True:
            nxt = next((n for n in adj[node] if n != prev and n not in seen), None)
            if nxt is None:
                break
            loop.append(nxt)
            seen.add(nxt)
            prev, node = node, nxt
        loops.append(loop)
    return loops


def _split_loop(loop: list[int], a: int, b: int, via: int) -> tuple[list[int], list[int]]:
    """The two paths from ``a`` to ``b`` around a closed loop: (the one through ``via``, the other)."""
    i = loop.index(a)
    rolled = loop[i:] + loop[:i]
    k = rolled.index(b)
    first, second = rolled[: k + 1], [a] + rolled[k:][::-1]
    return (first, second) if via in first else (second, first)


def _nodes(edges) -> list[int]:
    return sorted({i for e in edges for i in e})


# analyzers with a running MediaPipe graph: closed at exit, before the interpreter tears down what their threads use
# (left to the garbage collector, a graph's threads could abort a torchrun worker at exit: "terminate called
# without an active exception")
_OPEN: "weakref.WeakSet[MediaPipeFaceAnalyzer]" = weakref.WeakSet()


@atexit.register
def _close_open_analyzers() -> None:
    for analyzer in list(_OPEN):
        analyzer.close()


class MediaPipeFaceAnalyzer:
    """MediaPipe Face Mesh (one face, still-image mode so each frame's result depends on that frame only).

    ``landmark_subset``: "contours" (the 128 outline points of oval, brows, eyes and lips, closest to a
    68-point layout) or "all" (the 468-point mesh) for the rendered landmark image; ``landmarks`` always
    holds the subset that is drawn.
    """

    name = "mediapipe-face-mesh"
    # mesh points: outer and inner mouth corners, and the middle of each lip contour
    OUTER_CORNERS, INNER_CORNERS = (61, 291), (78, 308)
    UPPER_OUTER, UPPER_INNER = 0, 13

    def __init__(self, landmark_subset: str = "contours", min_detection_confidence: float = 0.3):
        if landmark_subset not in ("contours", "all"):
            raise ValueError("landmark_subset must be 'contours' or 'all'")
        self.landmark_subset = landmark_subset
        self.min_detection_confidence = float(min_detection_confidence)
        self._mesh = None
        self._lock = threading.Lock()
        self._regions = None

    def close(self) -> None:
        """Stop the MediaPipe graph (its threads); the next analysis starts a new one."""
        with self._lock:
            if self._mesh is not None:
                self._mesh.close()
                self._mesh = None

    def __getstate__(self):  # picklable for DataLoader workers: the graph is rebuilt on first use
        return {"landmark_subset": self.landmark_subset, "min_detection_confidence": self.min_detection_confidence}

    def __setstate__(self, state):
        self.__init__(**state)

    def settings(self) -> dict:
        import mediapipe

        return {"analyzer": self.name, "mediapipe": mediapipe.__version__, "subset": self.landmark_subset,
                "min_detection_confidence": self.min_detection_confidence, "render": 1}

    def _load(self):
        try:
            from mediapipe.python.solutions import face_mesh
            from mediapipe.python.solutions import face_mesh_connections as c
        except ImportError as e:
            raise FaceAnalysisError(
                "the landmark/parsing streams need mediapipe: pip install --no-deps mediapipe==0.10.21 absl-py "
                f"attrs flatbuffers 'protobuf>=4.25.3,<5' ({e})") from None
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                                        min_detection_confidence=self.min_detection_confidence)
        _OPEN.add(self)
        lips_outer, lips_inner = sorted(_loops(c.FACEMESH_LIPS), key=len, reverse=True)[:2]
        if self.landmark_subset == "contours":
            self._subset = np.array(_nodes(c.FACEMESH_CONTOURS))
        else:
            self._subset = None
        self._regions = {
            "skin": ("loop", _loops(c.FACEMESH_FACE_OVAL)[0]),
            "nose": ("hull", _nodes(c.FACEMESH_NOSE)),
            "left_eyebrow": ("hull", _nodes(c.FACEMESH_LEFT_EYEBROW)),
            "right_eyebrow": ("hull", _nodes(c.FACEMESH_RIGHT_EYEBROW)),
            "left_eye": ("loop", _loops(c.FACEMESH_LEFT_EYE)[0]),
            "right_eye": ("loop", _loops(c.FACEMESH_RIGHT_EYE)[0]),
            "inner_mouth": ("loop", lips_inner),
        }
        upper_outer, lower_outer = _split_loop(lips_outer, *self.OUTER_CORNERS, self.UPPER_OUTER)
        upper_inner, lower_inner = _split_loop(lips_inner, *self.INNER_CORNERS, self.UPPER_INNER)
        self._regions["upper_lip"] = upper_outer + upper_inner[::-1]
        self._regions["lower_lip"] = lower_outer + lower_inner[::-1]

    def analyze(self, frames: Sequence[np.ndarray]) -> list[FrameAnalysis]:
        with self._lock:
            if self._mesh is None:
                self._load()
            out = []
            for frame in frames:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if frame.ndim != 3 or frame.shape[2] != 3:
                    raise FaceAnalysisError(f"expected an RGB frame (H, W, 3), got shape {frame.shape}")
                result = self._mesh.process(frame)
                h, w = frame.shape[:2]
                if not result.multi_face_landmarks:
                    out.append(FrameAnalysis(None, np.zeros((h, w), np.uint8)))
                    continue
                pts = np.array([(p.x * w, p.y * h) for p in result.multi_face_landmarks[0].landmark], np.float32)
                drawn = pts if self._subset is None else pts[self._subset]
                out.append(FrameAnalysis(drawn, self._parse(pts, h, w)))
            return out

    def _parse(self, pts: np.ndarray, h: int, w: int) -> np.ndarray:
        """The mesh's regions filled into a LaPa-style class map (later regions overwrite earlier ones)."""
        import cv2

        index = {name: i for i, name in enumerate(PARSING_CLASSES)}
        parsing = np.zeros((h, w), np.uint8)

        def polygon(kind, ids):
            p = pts[ids]
            return cv2.convexHull(p).reshape(-1, 2) if kind == "hull" else p

        def fill(target, poly, value):
            cv2.fillPoly(target, [np.round(poly).astype(np.int32)], int(value))

        for name in ("skin", "nose", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye"):
            fill(parsing, polygon(*self._regions[name]), index[name])
        for name in ("upper_lip", "lower_lip"):
            fill(parsing, pts[self._regions[name]], index[name])
        fill(parsing, polygon(*self._regions["inner_mouth"]), index["inner_mouth"])
        return parsing


# --- rendering -----------------------------------------------------------------------------------------
def render_landmarks(frame: np.ndarray, landmarks: Optional[np.ndarray], radius: Optional[int] = None) -> np.ndarray:
    """The frame with the landmarks as yellow dots (the frame unchanged when no face was found)."""
    import cv2

    img = np.array(frame, dtype=np.uint8, order="C")  # a C-contiguous copy (frames may be permuted views)
    if landmarks is None:
        return img
    r = radius if radius is not None else max(1, round(min(img.shape[:2]) / 112))
    for x, y in np.round(landmarks).astype(int):
        cv2.circle(img, (int(x), int(y)), r, LANDMARK_COLOUR, thickness=-1, lineType=cv2.LINE_AA)
    return img


def render_parsing(parsing: np.ndarray) -> np.ndarray:
    """Class map (H, W) -> RGB colour image (H, W, 3)."""
    return PARSING_PALETTE[np.clip(parsing, 0, len(PARSING_PALETTE) - 1)]


def render_analysis(frames: Sequence[np.ndarray], analysis: Sequence[FrameAnalysis]
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(landmark images, parsing images), one of each per frame."""
    return ([render_landmarks(f, a.landmarks) for f, a in zip(frames, analysis)],
            [render_parsing(a.parsing) for a in analysis])


# --- per-clip cache ------------------------------------------------------------------------------------
def clip_digest(frames: Sequence[np.ndarray], settings: dict) -> str:
    """Content hash of a clip's pixels and the analyzer settings."""
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps(settings, sort_keys=True).encode())
    for f in frames:
        a = np.ascontiguousarray(f, dtype=np.uint8)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class AnalysisCache:
    """One ``<digest>.npz`` per clip: landmarks (T, N, 2) (NaN rows: no face) and parsing maps (T, H, W)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npz"

    def get(self, digest: str) -> Optional[list[FrameAnalysis]]:
        path = self._path(digest)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            with np.load(path) as z:
                lms, parsing, found = z["landmarks"], z["parsing"], z["found"]
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring unreadable face-analysis cache entry %s: %s", path.name, e)
            self.misses += 1
            return None
        self.hits += 1
        return [FrameAnalysis(lm if ok else None, p) for lm, p, ok in zip(lms, parsing, found)]

    def put(self, digest: str, analysis: Sequence[FrameAnalysis]) -> None:
        if not analysis:
            return
        n = max((len(a.landmarks) for a in analysis if a.landmarks is not None), default=0)
        lms = np.full((len(analysis), n, 2), np.nan, np.float32)
        for i, a in enumerate(analysis):
            if a.landmarks is not None:
                lms[i] = a.landmarks
        path = self._path(digest)
        with atomic_write(path, "wb") as f:
            np.savez_compressed(f, landmarks=lms, parsing=np.stack([a.parsing for a in analysis]),
                                found=np.array([a.face_found for a in analysis]))


def analyze_clip(frames: Sequence[np.ndarray], analyzer: FaceAnalyzer,
                 cache: Optional[AnalysisCache] = None) -> list[FrameAnalysis]:
    """Analyse a clip's frames, through the cache when one is given."""
    digest = clip_digest(frames, analyzer.settings()) if cache is not None else None
    if cache is not None:
        hit = cache.get(digest)
        if hit is not None and len(hit) == len(frames):
            return hit
    analysis = analyzer.analyze(frames)
    if cache is not None:
        cache.put(digest, analysis)
    return analysis


_default: Optional[MediaPipeFaceAnalyzer] = None


def default_analyzer() -> MediaPipeFaceAnalyzer:
    """A process-wide MediaPipe analyzer (created on first use)."""
    global _default
    if _default is None:
        _default = MediaPipeFaceAnalyzer()
    return _default
