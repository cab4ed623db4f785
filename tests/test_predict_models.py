"""Several models on one clip (issue 24, item 5): the clip is decoded and searched for faces once, and each
model's prediction equals the one it makes alone; the CLI's ``predict --models`` prints them side by side."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import feat_clip

from dferclip.video.faces import FaceDetector
from dferclip.video.ingest import default_detector

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("dferclip-tiny", "fineclipper-tiny", "emoclip-tiny")  # 16 frames, face-mesh streams, 32 frames


class CountingDetector(FaceDetector):
    """The real detector, counting the frames it is given."""

    def __init__(self):
        self.inner, self.frames = default_detector(), 0

    def detect(self, images):
        self.frames += len(images)
        return self.inner.detect(images)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """One tiny model of each family, saved (fixed weights, so separate loads are the same model)."""
    from dferclip.weights.checkpoints import load_model, save_model

    torch.manual_seed(3)
    root = tmp_path_factory.mktemp("models")
    return [str(save_model(load_model(f"random:{name}"), root / name)) for name in FAMILIES]


def test_one_decode_for_all_models_and_each_prediction_as_alone(saved_models):
    from dferclip.predict import predict_clip, predict_models
    from dferclip.weights.checkpoints import load_model

    clip = feat_clip("single_face.mp4")
    models = [load_model(p) for p in saved_models]
    together = CountingDetector()
    preds = predict_models(models, clip, detector=together, dev="cpu")
    alone = []
    for model in models:
        counter = CountingDetector()
        alone.append((predict_clip(model, clip, detector=counter, dev="cpu"), counter.frames))
    # each model's frames are among those searched once; alone, the frames are searched again per model
    assert together.frames < sum(n for _, n in alone)
    assert together.frames <= sum(n for _, n in alone) - min(n for _, n in alone)  # at least one model's pass saved
    for model, pred, (single, _) in zip(models, preds, alone):
        assert pred.classes == single.classes == model.class_names
        assert len(pred.ingest.frames) == model.input_config.num_frames
        np.testing.assert_allclose(pred.probs, single.probs, atol=1e-5)
        assert [f.index for f in pred.ingest.frames] == [f.index for f in single.ingest.frames]
        assert len(pred.timeline) == len(single.timeline) > 0
        np.testing.assert_allclose(pred.timeline.probabilities, single.timeline.probabilities, atol=1e-5)


def test_cli_prints_the_models_side_by_side_and_json_has_one_entry_each(saved_models):
    clip = feat_clip("single_face.mp4")
    run = [sys.executable, "-m", "dferclip", "predict", str(clip), "--models", ",".join(saved_models), "--no-timeline"]
    out = subprocess.run(run + ["--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    entries = json.loads(out.stdout)["models"]
    assert [e["model"] for e in entries] == saved_models
    assert [e["family"] for e in entries] == ["dferclip", "fineclipper", "emoclip"]
    for e in entries:
        assert abs(sum(e["probabilities"].values()) - 1) < 1e-4
    text = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert text.returncode == 0, text.stderr[-2000:]
    assert "decoded and searched for a face once" in text.stdout
    lines = text.stdout.splitlines()
    assert sum(line.startswith(("[1]", "[2]", "[3]")) for line in lines) == 3
    assert any(line.split()[:1] == ["happiness"] and len(line.split()) == 4 for line in lines)  # a column each
    bad = subprocess.run(run[:5] + ["--models", saved_models[0]], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode != 0 and "two or more" in bad.stderr
