"""Frames per image-tower call: the size that ran fastest on this machine is picked by timing, kept in the cache
under a key that names it, and used by the corpus and the timeline; a resumed corpus run with nothing left
answers without torch."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dferclip
from app_helpers import feat_clip
from dferclip import backends, files
from dferclip.corpus import ClipRef, predict_corpus, read_records
from dferclip.predict import iter_predict

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache of each test's own: what one test timed or wrote is not another's."""
    monkeypatch.setenv("DFERCLIP_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return dferclip.load_model("random:dferclip-tiny")


def _keep_frame_batch(model, frames: int, name: str = "eager"):
    files.write_json(files.cache_dir() / backends.SPEED_FILE, {backends._batch_key(model, name): {"frames": frames}})


class TowerCalls:
    """The frame count of every call of the model's image tower (a forward pre-hook)."""

    def __init__(self, model):
        self.sizes = []
        self._hook = model.clip.visual.register_forward_pre_hook(lambda _, args: self.sizes.append(len(args[0])))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._hook.remove()


def test_the_chooser_picks_the_size_that_ran_fastest_per_frame():
    frames = torch.zeros(64, 1)
    sizes = (8, 16, 32, 64)

    def per_call(x):  # a fixed cost a call: the biggest batch is cheapest a frame
        time.sleep(0.02)

    def growing(x):  # a frame costs more the bigger the batch: the smallest is cheapest a frame
        time.sleep(len(x) ** 2 * 2e-5)

    timed = backends.time_frame_batches({"per_call": per_call, "growing": growing}, frames, sizes, rounds=1)
    assert set(timed) == {"per_call", "growing"} and all(set(t) == set(sizes) for t in timed.values())
    assert backends.fastest(timed["per_call"]) == 64
    assert backends.fastest(timed["growing"]) == 8
    assert backends.fastest({16: 1.0, 8: 1.0, 32: 2.0}) == 8  # equals: the smaller


def test_the_timed_size_is_kept_under_a_key_naming_the_backend_and_the_size(tiny):
    sizes = backends.frame_batch_sizes(tiny.input_config.num_frames)
    assert sizes == (8, 16, 32, 64)
    assert backends.frame_batch(tiny, "cpu", torch.float32) == backends.FRAME_BATCH  # never timed: the fallback
    assert not (files.cache_dir() / backends.SPEED_FILE).exists()
    picked = backends.frame_batch(tiny, "cpu", torch.float32, measure=True)  # the real tiny tower, timed
    kept = json.loads((files.cache_dir() / backends.SPEED_FILE).read_text())[backends._batch_key(tiny, "eager")]
    assert picked in sizes and kept["frames"] == picked
    assert picked == min(sizes, key=lambda n: kept["ms_per_frame"][str(n)])
    assert backends.frame_batch(tiny, "cpu", torch.float32) == picked  # kept: not timed again
    _keep_frame_batch(tiny, 8)
    assert backends.frame_batch(tiny, "cpu", torch.float32, measure=True) == 8
    assert backends.frame_batch(tiny, "cpu", torch.bfloat16) == backends.FRAME_BATCH  # only CPU fp32 is timed
    assert backends.frame_batch(dferclip.load_model("random:fineclipper-tiny"), "cpu") == backends.FRAME_BATCH
    # the speed verdict of a backend is kept per size
    key16, key32 = (backends._speed_key(tiny, "openvino", n) for n in (16, 32))
    assert key16 != key32 and key16.endswith("|16 frames a call")


@pytest.mark.parametrize("frames, clips_a_forward", [(8, 1), (64, 4)])
def test_the_corpus_scores_as_many_clips_a_forward_as_fill_the_kept_size(tiny, tmp_path, frames, clips_a_forward):
    _keep_frame_batch(tiny, frames)
    names = ("single_face.mp4", "no_face.mp4", "face_noface.mov", "noface_face.mov", "WolfgangLanger_Pexels.mp4")
    clips = [ClipRef(n, feat_clip(n)) for n in names]
    with TowerCalls(tiny) as calls:
        summary = predict_corpus(tiny, clips, tmp_path / "preds.jsonl", workers=0, progress=False)
    assert summary.done == 5 and summary.clips_per_forward == clips_a_forward
    assert max(calls.sizes) == frames and sum(calls.sizes) == 5 * 16  # every clip's frames, once
    # an explicit batch size wins: all its clips' frames in one call
    with TowerCalls(tiny) as calls:
        again = predict_corpus(tiny, clips, tmp_path / "explicit.jsonl", batch_size=2, workers=0, progress=False)
    assert again.clips_per_forward == 2 and calls.sizes == [32, 32, 16]
    kept, explicit = read_records(tmp_path / "preds.jsonl"), read_records(tmp_path / "explicit.jsonl")
    for a, b in zip(kept, explicit):
        assert a["clip"] == b["clip"] and a["top"] == b["top"]
        for c, p in a["probabilities"].items():
            assert abs(p - b["probabilities"][c]) < 1e-5


def test_the_timeline_encodes_windows_a_kept_size_at_a_time(tiny):
    clip = feat_clip("single_face.mp4")
    _keep_frame_batch(tiny, 8)
    with TowerCalls(tiny) as calls:
        steps = list(iter_predict(tiny, clip))
    assert len(steps) > 2 and max(calls.sizes) <= 8
    _keep_frame_batch(tiny, 64)
    with TowerCalls(tiny) as calls:
        grouped = list(iter_predict(tiny, clip))
    assert calls.sizes[0] == 16  # the label waits for the clip's own frames only
    assert len(calls.sizes) == 2 and grouped[-1].encoded_frames == steps[-1].encoded_frames
    assert len(grouped) == len(steps) and grouped[1].encoded_frames == grouped[-1].encoded_frames
    assert abs(grouped[-1].timeline.probabilities - steps[-1].timeline.probabilities).max() < 1e-5


def test_a_resumed_corpus_with_nothing_left_answers_without_torch(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("single_face.mp4", "no_face.mp4"):
        (folder / name).symlink_to(feat_clip(name))
    out = tmp_path / "preds.jsonl"
    out.write_text(json.dumps({"clip": str(folder / "no_face.mp4")}) + "\n")
    (tmp_path / "preds.part1.jsonl").write_text(json.dumps({"clip": str(folder / "single_face.mp4")}) + "\n")
    code = ("import sys; from dferclip.cli import main; rc = main(sys.argv[1:]); "
            "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "predict", str(folder), "--output", str(out), "--model",
                           "random:dferclip-vit-b-32"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no torch"
    assert "0 clips predicted, 2 already in the output; 2 clips listed" in done.stderr
    assert sorted(r["clip"] for r in read_records(out)) == sorted(str(p) for p in folder.iterdir())
    assert not (tmp_path / "preds.part1.jsonl").exists()  # the interrupted sharded run's part merged in


def test_a_timing_is_abandoned_once_its_stop_is_set():
    import threading

    stop = threading.Event()
    calls = []

    def run(x):
        calls.append(len(x))
        if len(calls) == 3:
            stop.set()  # a registry closing while the timing runs

    with pytest.raises(backends.TimingStopped):
        backends.time_frame_batches({"run": run}, torch.zeros(64, 1), (8, 16, 32, 64), stop=stop)
    assert calls == [8, 16, 32]
