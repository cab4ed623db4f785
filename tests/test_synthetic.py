"""The synthetic expression clips: dynamics, the temporal-order-only pair, frame folders and WebM videos."""
import av
import numpy as np

from dferclip.config import InputConfig
from dferclip.training.data import load_annotation_dataset, read_annotation
from dferclip.training.synthetic import (
    CLASS_NAMES,
    TEMPORAL_PAIR,
    generate_clip,
    intensity_curve,
    synthetic_descriptions,
    write_frame_dataset,
    write_video_dataset,
)


def _arr(frames):
    return np.stack([np.asarray(f, dtype=np.float32) for f in frames])


def test_clip_shape_and_determinism():
    a = generate_clip("surprise", np.random.default_rng(7), num_frames=10, size=48)
    b = generate_clip("surprise", np.random.default_rng(7), num_frames=10, size=48)
    c = generate_clip("surprise", np.random.default_rng(8), num_frames=10, size=48)
    assert len(a) == 10 and a[0].size == (48, 48) and a[0].mode == "RGB"
    assert np.array_equal(_arr(a), _arr(b)) and not np.array_equal(_arr(a), _arr(c))


def test_temporal_pair_has_the_same_frames_in_reverse_order():
    onset, fading = TEMPORAL_PAIR
    a = _arr(generate_clip(onset, np.random.default_rng(3), 16, 48))
    b = _arr(generate_clip(fading, np.random.default_rng(3), 16, 48))
    assert np.array_equal(a, b[::-1])
    assert not np.array_equal(a, b)


def test_expressions_move_over_time():
    def motion(name):  # largest change from the first frame, on 4x4 block means (averages the noise out)
        clips = [_arr(generate_clip(name, np.random.default_rng(s), 16, 64, variation=0.0)) for s in range(4)]
        blocks = [c.reshape(16, 16, 4, 16, 4, 3).mean(axis=(2, 4)) for c in clips]
        return np.mean([np.abs(b - b[0]).mean(axis=(1, 2, 3)).max() for b in blocks])

    assert motion("surprise") > 1.5 * motion("neutral")
    curve = intensity_curve("onset-apex-offset", 40, np.random.default_rng(0))
    peak = int(curve.argmax())
    assert curve[0] < 0.5 and curve.max() == 1 and 0 < peak < 39
    assert np.all(np.diff(curve[: peak + 1]) >= 0)
    up = intensity_curve("onset-apex", 20, np.random.default_rng(1))
    assert up[0] == 0 and up[-1] == 1 and np.all(np.diff(up) >= 0)


def test_frame_dataset_in_the_official_format(tmp_path):
    lst = write_frame_dataset(tmp_path, 2, seed=5, size=40, frames=(5, 9))
    recs, rep = read_annotation(lst, num_classes=len(CLASS_NAMES))
    assert len(recs) == 2 * len(CLASS_NAMES) and not rep.bad_lines
    assert sorted(r.label for r in recs) == sorted(list(range(len(CLASS_NAMES))) * 2)
    ds = load_annotation_dataset(lst, InputConfig(num_frames=8, image_size=32), num_classes=len(CLASS_NAMES))
    assert not ds.report.problems and all(5 <= r.num_frames <= 9 for r in ds.records)
    assert ds[0][0].shape == (8, 3, 32, 32)
    ds_desc = synthetic_descriptions()
    assert ds_desc.classes == CLASS_NAMES and all(ds_desc.descriptions)


def test_webm_videos(tmp_path):
    pairs = write_video_dataset(tmp_path, 1, seed=2, size=64, frames=(6, 8), classes=["neutral", "surprise"])
    assert sorted(p.parent.name for p, _ in pairs) == ["neutral", "surprise"]
    for path, label in pairs:
        assert path.suffix == ".webm"
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            assert stream.codec_context.name in ("vp9", "libvpx-vp9")
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        assert 6 <= len(frames) <= 8 and frames[0].shape == (64, 64, 3)
