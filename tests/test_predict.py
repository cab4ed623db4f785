"""dferclip.predict and the predict command, on real clips with the tiny model."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import TINY, corrupt_copy, feat_clip

import dferclip
from dferclip import runtime
from dferclip.cli import main as cli_main
from dferclip.errors import CorruptVideoError, NotAVideoError
from dferclip.predict import iter_predict, predict_clip, timeline_spec
from dferclip.video.decode import sliding_windows


@pytest.fixture(scope="module")
def tiny():
    return dferclip.load_model(TINY)


@pytest.fixture(scope="module")
def face_prediction(tiny):
    return predict_clip(tiny, feat_clip("single_face.mp4"))


def test_prediction_of_a_face_clip(tiny, face_prediction):
    pred = face_prediction
    assert pred.classes == tiny.class_names
    assert math.isclose(float(pred.probs.sum()), 1.0, rel_tol=1e-5)
    assert pred.top == tiny.class_names[int(np.argmax(pred.logits))]
    assert pred.ingest.face_found and len(pred.ingest.crops) == tiny.input_config.num_frames
    # the same clip through the model's forward gives the same class probabilities
    with torch.no_grad():
        direct = tiny(pred.ingest.video).softmax(-1)[0].numpy()
    np.testing.assert_allclose(pred.probs, direct, atol=1e-5)
    assert set(pred.timings) == {"ingestion", "model", "label", "other", "total"}
    assert pred.timings["total"] >= pred.timings["ingestion"] + pred.timings["model"] - 1e-6


def test_timeline_covers_the_clip_and_matches_per_window_forward(tiny, face_prediction):
    pred = face_prediction
    tl = pred.timeline
    duration = pred.ingest.source.duration_s
    assert len(tl) >= 2 and tl.probabilities.shape == (len(tl), len(pred.classes))
    assert tl.start[0] == 0.0 and tl.end[-1] == pytest.approx(duration, abs=0.1)
    np.testing.assert_allclose(tl.probabilities.sum(1), 1.0, atol=1e-5)
    with torch.no_grad():
        direct = tiny(pred.ingest.windows.video).softmax(-1).numpy()
    np.testing.assert_allclose(tl.probabilities, direct, atol=1e-5)
    # windows share frames: fewer distinct frames were encoded than window slots
    slots = 16 * (1 + len(tl))
    assert pred.encoded_frames < slots
    rows = tl.rows(pred.classes)
    assert len(rows) == len(tl) * len(pred.classes)


def test_iter_predict_gives_the_label_first_then_the_timeline_window_by_window(tiny, face_prediction):
    steps = list(iter_predict(tiny, feat_clip("single_face.mp4")))
    first, last = steps[0], steps[-1]
    # the label comes after encoding the clip's own frames only, with an empty timeline
    assert len(first.timeline) == 0 and not first.complete and first.windows_total == len(face_prediction.timeline)
    assert first.encoded_frames == len({f.index for f in first.ingest.frames})
    np.testing.assert_allclose(first.probs, face_prediction.probs, atol=1e-6)
    # then one more window per step, each encoding only frames not encoded before
    assert [len(s.timeline) for s in steps] == list(range(len(steps)))
    assert all(a.encoded_frames <= b.encoded_frames for a, b in zip(steps, steps[1:]))
    assert last.complete and last.encoded_frames == face_prediction.encoded_frames
    np.testing.assert_allclose(last.timeline.probabilities, face_prediction.timeline.probabilities, atol=1e-6)
    assert last.timeline.start == face_prediction.timeline.start
    assert first.timings["label"] <= last.timings["total"]


def test_timeline_spec_keeps_to_the_frame_budget():
    times = [i / 30 for i in range(300)]  # 10 s at 30 fps
    for budget in (24, 48, 256):
        spec = timeline_spec(10.0, budget)
        windows = sliding_windows(times, 16, spec)
        distinct = {i for w in windows for i in w.indices}
        assert len(distinct) <= budget + 16, (budget, len(windows), len(distinct))
        assert windows[-1].end_s == pytest.approx(times[-1], abs=0.05)


def test_no_face_clip_falls_back_with_a_warning(tiny):
    pred = predict_clip(tiny, feat_clip("no_face.mp4"), windows=False)
    assert not pred.ingest.face_found
    assert any("no face" in w for w in pred.warnings)
    assert pred.timeline is None and math.isclose(float(pred.probs.sum()), 1.0, rel_tol=1e-5)


def test_bad_files_raise_typed_errors(tiny, tmp_path):
    with pytest.raises(CorruptVideoError):
        predict_clip(tiny, corrupt_copy(feat_clip("single_face.mp4"), tmp_path / "cut.mp4"))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    with pytest.raises(NotAVideoError):
        predict_clip(tiny, text)


def test_reduced_precision_matches_fp32_on_cpu(tiny, face_prediction):
    """bf16 autocast (what CUDA uses, and CPUs with AVX512-BF16 may) against fp32, same frames."""
    video = face_prediction.ingest.video
    with runtime.inference("cpu", torch.float32):
        ref = tiny(video).softmax(-1)
    with runtime.inference("cpu", torch.bfloat16):
        low = tiny(video).float().softmax(-1)
    assert torch.argmax(ref) == torch.argmax(low)
    assert (ref - low).abs().max() < 0.05


def test_predict_command_json(capsys, monkeypatch):
    monkeypatch.delenv("DFERCLIP_MODEL", raising=False)
    code = cli_main(["predict", str(feat_clip("single_face.mp4")), "--checkpoint", TINY, "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "untrained weights: predictions are meaningless" in err
    data = json.loads(out)
    assert data["ingestion"]["face_found"] is True
    assert math.isclose(sum(data["probabilities"].values()), 1.0, rel_tol=1e-5)
    assert data["top"] == max(data["probabilities"], key=data["probabilities"].get)
    assert data["weights"]["trained"] is False and len(data["timeline"]) >= 2


def test_predict_command_text_and_errors(capsys, tmp_path):
    assert cli_main(["predict", str(feat_clip("single_face.mp4")), "--checkpoint", TINY, "--no-timeline"]) == 0
    out, err = capsys.readouterr()
    assert "face: found" in out and "WARNING: untrained weights" in err
    bad = corrupt_copy(feat_clip("single_face.mp4"), tmp_path / "cut.mp4")
    assert cli_main(["predict", str(bad), "--checkpoint", TINY]) == 2
    assert "error:" in capsys.readouterr().err


def test_predict_command_checks_the_input_before_loading_a_model(capsys, tmp_path):
    """An empty file or an image is refused before the model loads: with weights that cannot load at all, the
    error is still about the file (so nobody waits for a model build to learn that the file is empty)."""
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    photo = feat_clip("single_face.mp4").with_name("single_face.jpg")
    for path, message in ((empty, "empty.mp4 is empty"), (tmp_path / "missing.mp4", "no such file"),
                          (photo, "image, not a video")):
        assert cli_main(["predict", str(path), "--checkpoint", "random:no-such-architecture"]) == 2
        err = capsys.readouterr().err
        assert message in err and "no-such-architecture" not in err, err


def test_a_bad_input_is_refused_before_torch_is_even_imported(tmp_path):
    import subprocess
    import sys

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    code = ("import sys; from dferclip.cli import main; rc = main(['predict', sys.argv[1]]); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(empty)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["2", "False"] and "is empty" in out.stderr
