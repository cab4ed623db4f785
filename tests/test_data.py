"""Annotation lists, frame folders, the official samplers and clip-consistent augmentation."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dferclip.config import InputConfig
from dferclip.errors import DataError
from dferclip.training.data import (
    Augment,
    ClipDataset,
    augment_for,
    check_frames,
    clip_rng,
    list_frames,
    load_annotation_dataset,
    middle_indices,
    open_dataset,
    read_annotation,
    stratified_split,
    train_indices,
)
from dferclip.video.decode import sample_indices


def _frames(folder, n, size=(40, 30), color=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for k in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if color is None else \
            np.full((size[1], size[0], 3), color, np.uint8)
        Image.fromarray(arr).save(folder / f"{k + 1:05d}.png")
    return folder


def test_parse_official_list_with_bad_lines(tmp_path):
    lst = tmp_path / "set_1_test.txt"
    lst.write_text(
        "/data/EECS-IoannisLab/datasets/DFEW/DFEW_Frame_Face/00001 144 1\n"
        "\n# a comment\n"
        "clips/with space 20 0\n"
        "only_two 12\n"
        "notnum x 3\n"
        "/abs/clip 30 9\n"
    )
    recs, rep = read_annotation(lst, num_classes=7, path_map={"/data/EECS-IoannisLab/datasets": "/srv/ds"})
    assert [(r.path, r.num_frames, r.label, r.line) for r in recs] == [
        ("/srv/ds/DFEW/DFEW_Frame_Face/00001", 144, 1, 1),
        (str(tmp_path / "clips/with space"), 20, 0, 4),
    ]
    assert [b[0] for b in rep.bad_lines] == [5, 6, 7]
    assert "out of range" in rep.bad_lines[2][2]
    assert "3 bad lines" in rep.summary()


def test_label_base_and_one_based_hint(tmp_path):
    lst = tmp_path / "raw.txt"
    lst.write_text("a 10 1\nb 10 7\nc 10 3\n")
    recs, rep = read_annotation(lst, num_classes=7)  # 7 is out of range for 0-based labels
    assert len(recs) == 2 and rep.notes and "1-based" in rep.notes[0]
    recs, rep = read_annotation(lst, num_classes=7, label_base=1)
    assert [r.label for r in recs] == [0, 6, 2] and not rep.notes and not rep.bad_lines


def test_missing_empty_and_mismatched_frames_are_reported_not_raised(tmp_path, caplog):
    _frames(tmp_path / "ok", 20)
    _frames(tmp_path / "short", 5)
    (tmp_path / "empty").mkdir()
    lst = tmp_path / "list.txt"
    lst.write_text("ok 20 0\nshort 16 1\nempty 10 2\ngone 10 3\n")
    with caplog.at_level(logging.WARNING, logger="dferclip.training.data"):
        ds = load_annotation_dataset(lst, InputConfig(num_frames=16, image_size=32), num_classes=7)
    assert [r.path.rsplit("/", 1)[1] for r in ds.records] == ["ok", "short"]
    assert ds.records[1].num_frames == 5
    assert ds.report.mismatched == [(2, str(tmp_path / "short"), 16, 5)]
    assert len(ds.report.missing) == 1 and len(ds.report.empty) == 1
    assert "frame counts differ" in caplog.text and "missing" in caplog.text
    video, label = ds[1]  # the 5-frame clip is padded with its last frame
    assert video.shape == (16, 3, 32, 32) and label == 1
    assert torch.equal(video[4], video[15]) and not torch.equal(video[0], video[4])


def test_no_usable_clips_is_a_clear_error(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("gone 10 0\n")
    with pytest.raises(DataError, match="no usable clips"):
        load_annotation_dataset(lst, num_classes=7)
    with pytest.raises(DataError, match="not found"):
        load_annotation_dataset(tmp_path / "nope.txt")


def test_frames_sorted_numerically(tmp_path):
    for name in ("frame_10.jpg", "frame_2.jpg", "frame_1.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.rsplit("/", 1)[1] for p in list_frames(tmp_path)] == ["frame_1.jpg", "frame_2.jpg", "frame_10.jpg"]


@pytest.mark.parametrize("n", [1, 5, 15, 16, 17, 31, 32, 47, 71, 847])
def test_samplers_follow_the_official_rules(n):
    T = 16
    # test: the middle of each segment, as the official _get_test_indices and the app's sampler
    expected = [int(n / T / 2 + n / T * k) for k in range(T)] if n > T else list(range(n)) + [n - 1] * (T - n)
    assert middle_indices(n, T).tolist() == expected == list(sample_indices(n, T, "middle"))
    # train: one random frame in each segment of n // T frames (TSN), edge padding when short
    avg = n // T
    seen = set()
    for seed in range(30):
        idx = train_indices(n, T, np.random.default_rng(seed))
        assert len(idx) == T
        if avg == 0:
            assert idx.tolist() == list(range(n)) + [n - 1] * (T - n)
        else:
            assert all(k * avg <= i < (k + 1) * avg for k, i in enumerate(idx))
        seen.add(tuple(idx))
    assert (len(seen) > 1) == (avg > 1)


def test_augmentation_is_one_parameter_set_per_clip(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frames = [Image.fromarray(base)] * 8
    ds = ClipDataset([], InputConfig(num_frames=8, image_size=32), train=True, augment="dfew", seed=3)
    out = ds.transform(0, frames)
    assert out.shape == (8, 3, 32, 32)
    assert all(torch.equal(out[0], out[k]) for k in range(8))  # identical frames stay identical
    assert torch.equal(out, ds.transform(0, frames))  # (seed, epoch, index) fixes the draw
    outs = {ds.transform(i, frames).sum().item() for i in range(6)}
    assert len(outs) > 1  # other clips get other parameters
    ds.set_epoch(1)
    assert not torch.equal(out, ds.transform(0, frames))


def test_augmentation_parameter_ranges_and_fallback():
    aug = augment_for("DFEW")
    assert aug.brightness == 0.5 and aug.crop_area == (0.08, 1.0) and aug.flip and aug.rotation == 0
    assert augment_for("FERV39K").rotation == 4 and augment_for("MAFW").brightness == 0
    flips, rng = [], np.random.default_rng(1)
    for _ in range(300):
        p = aug.sample(rng, 100, 80, 64)
        assert 0.5 <= p["brightness"] <= 1.5
        kind, box = p["crop"]
        if kind == "box":
            w, h = box[2] - box[0], box[3] - box[1]
            assert 0 <= box[0] and box[2] <= 100 and 0 <= box[1] and box[3] <= 80
            assert 0.08 * 8000 * 0.9 <= w * h <= 8000
        flips.append(p["flip"])
    assert 0.35 < np.mean(flips) < 0.65
    # a 1000 x 10 frame: no crop of the sampled area fits in 10 tries -> scale + random crop
    p = aug.sample(np.random.default_rng(0), 1000, 10, 32)
    assert p["crop"][0] == "fallback"
    img = Augment.apply(Image.new("RGB", (1000, 10)), p, 32)
    assert img.size == (32, 32)
    rot = augment_for("ferv39k").sample(np.random.default_rng(0), 50, 50, 32)["rotation"]
    assert -4 <= rot <= 4


def test_test_transform_is_plain_bilinear_resize_without_normalisation(tmp_path):
    _frames(tmp_path / "c", 20, size=(50, 40))
    recs, rep = read_annotation(_write(tmp_path / "l.txt", "c 20 2\n"), num_classes=7)
    ds = ClipDataset(check_frames(recs, rep), InputConfig(num_frames=4, image_size=24))
    video, label = ds[0]
    frames = list_frames(tmp_path / "c")
    ref = np.array(Image.open(frames[middle_indices(20, 4)[1]]).convert("RGB").resize((24, 24), Image.BILINEAR))
    assert torch.allclose(video[1], torch.from_numpy(ref).permute(2, 0, 1).float() / 255)
    assert label == 2
    normed = ClipDataset(ds.records, InputConfig(num_frames=4, image_size=24, mean=(0.5,) * 3, std=(0.25,) * 3))
    assert torch.allclose(normed[0][0], (video - 0.5) / 0.25, atol=1e-6)


def _write(path, text):
    path.write_text(text)
    return path


def test_stratified_split_is_seeded_disjoint_and_per_class():
    labels = [0] * 50 + [1] * 20 + [2] * 3 + [3]
    tr, va = stratified_split(labels, 0.2, seed=1)
    assert sorted(tr + va) == list(range(len(labels))) and not set(tr) & set(va)
    counts = np.bincount([labels[i] for i in va], minlength=4)
    assert counts.tolist() == [10, 4, 1, 0]
    assert stratified_split(labels, 0.2, seed=1) == (tr, va) != stratified_split(labels, 0.2, seed=2)


def test_class_folder_tree(tmp_path):
    _frames(tmp_path / "happiness" / "clip1", 6)
    _frames(tmp_path / "Sadness" / "clip2", 7)
    ds = open_dataset(tmp_path, InputConfig(num_frames=4, image_size=16),
                      class_names=["happiness", "sadness", "neutral"])
    got = {r.path.rsplit("/", 1)[1]: (r.label, r.num_frames) for r in ds.records}
    assert got == {"clip1": (0, 6), "clip2": (1, 7)}
    assert ds[0][0].shape == (4, 3, 16, 16)
    (tmp_path / "joy").mkdir()
    with pytest.raises(DataError, match="not a class"):
        open_dataset(tmp_path, class_names=["happiness", "sadness"])


def test_hf_datasets_loader(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    clips = [[Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)) for _ in range(n)] for n in (3, 9)]
    features = datasets.Features({"frames": datasets.Sequence(datasets.Image()),
                                  "label": datasets.ClassLabel(names=["happiness", "sadness"])})
    dd = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"frames": clips, "label": [1, 0]}, features=features)})
    dd.save_to_disk(str(tmp_path / "hfds"))
    ds = open_dataset(f"hf:{tmp_path / 'hfds'}@test", InputConfig(num_frames=4, image_size=16),
                      class_names=["happiness", "sadness"])
    assert len(ds) == 2 and ds.labels == [1, 0] and ds.class_names == ["happiness", "sadness"]
    video, label = ds[0]
    assert video.shape == (4, 3, 16, 16) and label == 1
    assert torch.equal(video[2], video[3])  # 3 frames padded to 4
    ref = np.array(clips[1][middle_indices(9, 4)[0]].resize((16, 16), Image.BILINEAR))
    assert torch.allclose(ds[1][0][0], torch.from_numpy(ref).permute(2, 0, 1).float() / 255)


def test_clip_rng_depends_on_seed_epoch_and_index():
    a = clip_rng(1, 0, 5).random()
    assert a == clip_rng(1, 0, 5).random()
    assert len({a, clip_rng(2, 0, 5).random(), clip_rng(1, 1, 5).random(), clip_rng(1, 0, 6).random()}) == 4


def test_video_folder_goes_through_ingestion_once(tmp_path):
    from dferclip.training.synthetic import write_video_dataset

    classes = ["neutral", "surprise"]
    write_video_dataset(tmp_path / "videos", 1, seed=4, size=96, frames=(10, 12), classes=classes)
    ds = open_dataset(tmp_path / "videos", InputConfig(num_frames=8, image_size=32), class_names=classes,
                      cache_dir=tmp_path / "cache")
    assert len(ds) == 2 and sorted(ds.labels) == [0, 1]
    assert all(10 <= r.num_frames <= 12 for r in ds.records)  # every decoded frame kept once
    assert ds[0][0].shape == (8, 3, 32, 32)
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.jpg")}
    again = open_dataset(tmp_path / "videos", InputConfig(num_frames=8, image_size=32), class_names=classes,
                         cache_dir=tmp_path / "cache")
    assert [r.path for r in again.records] == [r.path for r in ds.records]
    assert stamp == {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.jpg")}  # reused, not redone


def test_unlabelled_hf_rows_are_skipped_and_reported_never_filed_under_the_last_class(tmp_path, caplog):
    datasets = pytest.importorskip("datasets")
    from dferclip.metrics import compute_metrics
    from dferclip.training.data import subset

    rng = np.random.default_rng(1)
    clips = [[Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)) for _ in range(n)] for n in (3, 5, 7)]
    features = datasets.Features({"frames": datasets.Sequence(datasets.Image()),
                                  "label": datasets.ClassLabel(names=["happiness", "sadness"])})
    datasets.Dataset.from_dict({"frames": clips, "label": [1, -1, 0]}, features=features).save_to_disk(
        str(tmp_path / "hfds"))
    with caplog.at_level(logging.WARNING):
        ds = open_dataset(f"hf:{tmp_path / 'hfds'}", InputConfig(num_frames=2, image_size=16),
                          class_names=["happiness", "sadness"])
    assert ds.labels == [1, 0] and len(ds) == 2
    assert ds.report.bad_lines[0][0] == 1 and "ClassLabel -1" in caplog.text
    third = np.array(clips[2][middle_indices(7, 2)[0]].resize((16, 16), Image.BILINEAR))
    assert torch.allclose(ds[1][0][0], torch.from_numpy(third).permute(2, 0, 1).float() / 255)  # row 2, not row 1
    part = subset(ds, [1])
    assert part.labels == [0] and torch.equal(part[0][0], ds[1][0])  # a split keeps reading the dataset's rows
    with pytest.raises(DataError, match="0..6"):  # a -1 that slips through is an error, not the last class
        compute_metrics([0, -1], [0, 6], 7)


def test_video_cache_is_rebuilt_for_a_replaced_video_and_never_reuses_a_partial_folder(tmp_path):
    from dferclip.training.data import ingest_videos
    from dferclip.training.synthetic import write_video_dataset
    from dferclip.video.clips import clip_key

    write_video_dataset(tmp_path / "a", 1, seed=4, size=96, frames=(10, 10), classes=["neutral"])
    write_video_dataset(tmp_path / "b", 1, seed=5, size=96, frames=(14, 14), classes=["neutral"])
    (video,) = (tmp_path / "a" / "neutral").iterdir()
    (other,) = (tmp_path / "b" / "neutral").iterdir()
    cache = tmp_path / "cache"
    lst, _ = ingest_videos([(video, 0)], cache, image_size=32)
    (first,) = read_annotation(lst)[0]
    folder = first.path
    frames_before = list_frames(folder)
    # an interrupted earlier run left a partial folder behind under the name the frames are written to first
    leftover = cache / (Path(folder).name + ".part")
    _frames(leftover, 30)
    Path(folder).rename(tmp_path / "moved-away")
    lst, _ = ingest_videos([(video, 0)], cache, image_size=32)
    (again,) = read_annotation(lst)[0]
    assert len(list_frames(again.path)) == len(frames_before) == 10  # no stray frames from the partial folder
    other.replace(video)  # the same path now holds another video
    lst, _ = ingest_videos([(video, 0)], cache, image_size=32)
    (replaced,) = read_annotation(lst)[0]
    assert replaced.num_frames == 14 and clip_key(replaced.path) == clip_key(video)
