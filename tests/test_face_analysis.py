"""Face analysis for FineCLIPER's middle level: MediaPipe landmarks and region maps on real faces, rendering,
the per-clip cache, and the renders inside the model's dataset wrapper."""
import numpy as np
import pytest
from media import PORTRAITS, astronaut_face, feat_data_dir, portrait_face

from dferclip.video.face_analysis import (
    PARSING_CLASSES,
    PARSING_PALETTE,
    AnalysisCache,
    FaceAnalyzer,
    FrameAnalysis,
    analyze_clip,
    clip_digest,
    render_landmarks,
    render_parsing,
)

mediapipe = pytest.importorskip("mediapipe", reason="mediapipe not installed (pip install --no-deps mediapipe==0.10.21 "
                                "absl-py attrs flatbuffers 'protobuf>=4.25.3,<5')")


@pytest.fixture(scope="module")
def analyzer():
    from dferclip.video.face_analysis import MediaPipeFaceAnalyzer

    return MediaPipeFaceAnalyzer()


def _faces():
    yield "astronaut", *astronaut_face()
    if feat_data_dir() is not None:
        name = "0-f15-hao-ph.jpg"
        assert name in PORTRAITS
        yield name, *portrait_face(name, 224)


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


@pytest.mark.parametrize("name,image,box", list(_faces()), ids=lambda v: v if isinstance(v, str) else "")
def test_landmarks_and_regions_on_real_faces(analyzer, name, image, box):
    assert isinstance(analyzer, FaceAnalyzer)
    (a,) = analyzer.analyze([image])
    assert a.face_found and a.landmarks.shape == (128, 2)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    inside = ((a.landmarks[:, 0] > x0 - 0.15 * w) & (a.landmarks[:, 0] < x1 + 0.15 * w)
              & (a.landmarks[:, 1] > y0 - 0.15 * h) & (a.landmarks[:, 1] < y1 + 0.15 * h))
    assert inside.all(), a.landmarks[~inside]
    p = a.parsing
    assert p.shape == image.shape[:2]
    regions = {c: p == i for i, c in enumerate(PARSING_CLASSES)}
    for c in ("skin", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "nose", "upper_lip", "lower_lip"):
        assert regions[c].sum() > 20, c
    assert not regions["hair"].any()  # the mesh proxy has no hair class
    face_pixels = p > 0
    fx, fy = _centroid(face_pixels)
    assert x0 < fx < x1 and y0 < fy < y1
    eyes_y = (_centroid(regions["left_eye"])[1] + _centroid(regions["right_eye"])[1]) / 2
    brows_y = (_centroid(regions["left_eyebrow"])[1] + _centroid(regions["right_eyebrow"])[1]) / 2
    nose_y = _centroid(regions["nose"])[1]
    assert brows_y < eyes_y < nose_y < _centroid(regions["upper_lip"])[1] < _centroid(regions["lower_lip"])[1]
    # the subject's left eye is on the image's right
    assert _centroid(regions["left_eye"])[0] > _centroid(regions["right_eye"])[0]
    assert (p[: int(y0 - 0.2 * h)] == 0).all()  # nothing above the face


def test_no_face_gives_empty_analysis(analyzer):
    flat = np.full((96, 96, 3), 128, np.uint8)
    (a,) = analyzer.analyze([flat])
    assert not a.face_found and a.landmarks is None and not a.parsing.any()
    assert np.array_equal(render_landmarks(flat, None), flat)
    import pickle

    clone = pickle.loads(pickle.dumps(analyzer))  # DataLoader workers get their own copy
    assert clone.settings() == analyzer.settings() and not clone.analyze([flat])[0].face_found


def test_rendering():
    frame = np.zeros((40, 40, 3), np.uint8)
    img = render_landmarks(frame, np.array([[10.0, 20.0]]), radius=1)
    assert tuple(img[20, 10]) == (255, 255, 0) and img[5, 5].sum() == 0 and frame.sum() == 0
    parsing = np.zeros((4, 4), np.uint8)
    parsing[1, 2] = PARSING_CLASSES.index("nose")
    rgb = render_parsing(parsing)
    assert rgb.shape == (4, 4, 3) and tuple(rgb[1, 2]) == tuple(PARSING_PALETTE[6]) and rgb[0, 0].sum() == 0


class CountingAnalyzer:
    name = "counting"

    def __init__(self):
        self.calls = 0

    def settings(self):
        return {"analyzer": self.name, "v": 1}

    def analyze(self, frames):
        self.calls += 1
        return [FrameAnalysis(np.array([[1.0, 2.0]], np.float32) if i % 2 == 0 else None,
                              np.full(f.shape[:2], i % 11, np.uint8)) for i, f in enumerate(frames)]


def test_cache_per_clip_keyed_by_content_and_settings(tmp_path):
    cache = AnalysisCache(tmp_path)
    counting = CountingAnalyzer()
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 30)]
    first = analyze_clip(frames, counting, cache)
    again = analyze_clip([f.copy() for f in frames], counting, cache)
    assert counting.calls == 1 and cache.hits == 1
    assert [a.face_found for a in again] == [True, False, True]
    assert np.array_equal(again[0].landmarks, first[0].landmarks) and np.array_equal(again[2].parsing, first[2].parsing)
    changed = [frames[0], frames[1], np.full((8, 8, 3), 31, np.uint8)]
    analyze_clip(changed, counting, cache)
    assert counting.calls == 2
    assert clip_digest(frames, {"v": 1}) != clip_digest(frames, {"v": 2})
    (path,) = [p for p in tmp_path.rglob("*.npz") if clip_digest(frames, counting.settings()) in p.name]
    path.write_bytes(b"truncated")
    analyze_clip(frames, counting, cache)  # an unreadable entry is recomputed, not fatal
    assert counting.calls == 3


def test_stream_dataset_renders_follow_the_video_augmentation(tmp_path):
    """Landmark renders are the frame plus dots, so after the dataset's random crop/flip/brightness they must
    match the video pixel for pixel away from the dots (and not match another epoch's crop)."""
    import torch
    from PIL import Image

    import dferclip
    from dferclip.models.fineclipper import fineclipper_config
    from dferclip.training.data import ClipDataset, ClipRecord

    image, _ = astronaut_face()
    folder = tmp_path / "clip"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(image).save(folder / f"{k:05d}.png")
    model = dferclip.build_model(fineclipper_config("mid", base="fineclipper-tiny"))
    model.analysis_cache = AnalysisCache(tmp_path / "cache")
    base = ClipDataset([ClipRecord(str(folder), 3, 0)], model.input_config, train=True,
                       augment={"crop_area": [0.3, 0.5], "flip": True, "brightness": 0.3})
    wrapped = model.wrap_dataset(base)
    assert wrapped.labels == [0] and len(wrapped) == 1
    inputs, label = wrapped[0]
    assert set(inputs) == {"video", "landmarks", "parsing"} and label == 0
    video, lm = (model.input_config.denormalize(inputs[k]) for k in ("video", "landmarks"))
    same = ((video - lm).abs().amax(dim=1) < 0.03).float().mean()
    assert same > 0.75 and (same < 1 or model.input_config.image_size < 16)
    assert inputs["parsing"].shape == inputs["video"].shape
    wrapped.set_epoch(1)
    other = model.input_config.denormalize(wrapped[0][0]["video"])
    assert ((other - lm).abs().amax(dim=1) < 0.03).float().mean() < same
    assert model.analysis_cache.hits >= 1 and torch.isfinite(inputs["parsing"]).all()
