"""Every face of a clip (issue 22, items 1 and 2): one track per person, each read over its own frames, in the
library, the CLI (one JSON entry per face, one corpus line per (clip, face)) and the annotated video."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from media import CountingDetector, moving_face_frames, portrait_face, write_video

from dferclip.predict import predict_clip, predict_faces
from dferclip.video.annotate import FACE_COLOURS
from dferclip.video.decode import WindowSpec
from dferclip.video.faces import iou
from dferclip.video.ingest import ingest_faces

ROOT = Path(__file__).resolve().parents[1]
FPS = 25
AWAY = range(30, 55)  # the second person is out of the frame from 1.2 to 2.2 s
PEOPLE = ("0-f15-hao-ph.jpg", "45-m7-di-ph.jpg")


@pytest.fixture(scope="module")
def two_people(tmp_path_factory):
    """Two real people side by side for 3 s; the second leaves for a second and comes back. Returns the clip and,
    per frame, each person's face box (None while away)."""
    faces = [portrait_face(name, 150) for name in PEOPLE]
    made = list(moving_face_frames(75, 640, 360, faces, visible=lambda i, t: not (i == 1 and t in AWAY)))
    path = write_video(tmp_path_factory.mktemp("two") / "two.mp4", [f for f, _ in made], fps=FPS)
    return path, [boxes for _, boxes in made]


def _person(box, truth_boxes):
    """Which person a box is on (IoU > 0.5 with their true face box), None for neither."""
    hits = [k for k, t in enumerate(truth_boxes) if t is not None and iou(box, t) > 0.5]
    return hits[0] if len(hits) == 1 else None


def test_each_person_is_one_track_read_where_they_are(two_people, tiny_model):
    path, truth = two_people
    detector = CountingDetector()
    (results,) = ingest_faces(path, [tiny_model.input_config], detector=detector,
                              windows=[WindowSpec(length_s=1.0, stride_s=0.5, max_windows=8)])
    assert len(results) == 2 and results[0].main and not results[1].main
    assert {r.track_id for r in results} == {0, 1} and all(r.faces == 2 for r in results)
    examined = [m.index for m in results[0].windows.frames]  # every frame decoded and searched
    assert len(set(examined)) == len(examined) == detector.frames  # each searched once, for both faces
    people = []
    for r in results:
        boxed = [m for m in r.frames if m.box is not None]
        assert len(boxed) >= 14, "a face's own frames have its box"
        on = {_person(m.box, truth[m.index]) for m in boxed}
        assert len(on) == 1 and None not in on, f"track {r.track_id} is on {on}"
        people.append(on.pop())
        # the model's frames come from where this person is: none while they are away
        assert all(truth[m.index][people[-1]] is not None for m in r.frames)
    assert sorted(people) == [0, 1]
    away = results[people.index(1)]
    assert away.span_s[0] < AWAY[0] / FPS and away.span_s[1] > AWAY[-1] / FPS  # one track across the absence
    assert all(w.start_s >= away.span_s[0] - 0.05 for w in away.windows.windows)


def test_predict_faces_gives_each_face_its_own_prediction(two_people, tiny_model):
    path, _ = two_people
    preds = predict_clip(tiny_model, path, faces="all", windows=False)
    assert isinstance(preds, list) and len(preds) == 2
    main = predict_clip(tiny_model, path, windows=False)
    np.testing.assert_allclose(preds[0].probs, main.probs, atol=1e-5)  # the main face reads as before
    for pred in preds:  # each prediction is the model on that face's own crops
        with torch.no_grad():
            direct = tiny_model(pred.ingest.video.float()).softmax(-1)[0].numpy()
        np.testing.assert_allclose(pred.probs, direct, atol=1e-5)
    assert not np.allclose(preds[0].ingest.video, preds[1].ingest.video)
    faces = [p.to_dict()["face"] for p in preds]
    assert [f["track"] for f in faces] == [0, 1] or [f["track"] for f in faces] == [1, 0]
    assert [f["main"] for f in faces] == [True, False]
    assert all(len(f["boxes"]) == tiny_model.input_config.num_frames for f in faces)
    with pytest.raises(ValueError, match="faces"):
        predict_clip(tiny_model, path, faces="every")


def test_a_clip_without_a_face_gives_one_centre_read(tiny_model):
    from app_helpers import feat_clip

    (pred,) = predict_faces(tiny_model, feat_clip("no_face.mp4"), windows=False)
    assert pred.ingest.track_id is None and pred.ingest.status == "no_face" and pred.ingest.faces == 0


def _frame_at(path, index):
    with av.open(str(path)) as c:
        for k, frame in enumerate(c.decode(c.streams.video[0])):
            if k == index:
                return frame.to_ndarray(format="rgb24").astype(int)
    raise IndexError(index)


def test_cli_json_has_an_entry_per_face_and_the_video_a_colour_per_face(two_people, tmp_path):
    path, truth = two_people
    out = tmp_path / "annotated.mp4"
    run = [sys.executable, "-m", "dferclip", "predict", str(path), "--model", "random:dferclip-tiny",
           "--faces", "all", "--no-timeline", "--annotate", str(out)]
    done = subprocess.run(run + ["--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    entries = json.loads(done.stdout)["faces"]
    assert len(entries) == 2
    for e in entries:
        assert e["face"]["span_s"][1] > e["face"]["span_s"][0]
        assert abs(sum(e["probabilities"].values()) - 1) < 1e-4
        assert any(b["box"] for b in e["face"]["boxes"])
    written = Path(json.loads(done.stdout)["annotated"]["path"])
    frame = _frame_at(written, 10)
    tops = []
    for k in range(2):
        x0, y0, x1, y1 = (int(round(v)) for v in truth[10][k])
        edge = frame[max(y0 - 3, 0): y0 + 4, x0:x1].reshape(-1, 3)
        near = [min(np.abs(edge - np.array(c)).sum(1)) for c in FACE_COLOURS[:2]]
        tops.append(int(np.argmin(near)))
        assert min(near) < 60, f"no face colour on person {k}'s box edge"
    assert sorted(tops) == [0, 1], "the two people are drawn in two colours"
    text = subprocess.run(run[:-2], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert text.returncode == 0 and "2 faces tracked" in text.stdout
    assert "face 1 (main)" in text.stdout.lower() or "(main)" in text.stdout
    bad = subprocess.run(run[:5] + ["--faces", "all", "--models", "random:dferclip-tiny,random:emoclip-tiny"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "--faces all" in bad.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_corpus_writes_a_line_per_clip_and_face(two_people, tmp_path, suffix):
    from app_helpers import feat_clip

    path, _ = two_people
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "two.mp4").write_bytes(Path(path).read_bytes())
    (folder / "empty.mp4").write_bytes(feat_clip("no_face.mp4").read_bytes())
    output = tmp_path / f"preds{suffix}"
    run = [sys.executable, "-m", "dferclip", "predict", str(folder), "--model", "random:dferclip-tiny",
           "--faces", "all", "--output", str(output), "--no-progress", "--workers", "0"]
    done = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in output.read_text().splitlines()]
    else:
        with open(output, newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0])[:5] == ["clip", "face", "face_main", "face_start_s", "face_end_s"]
    by_clip = {}
    for r in rows:
        by_clip.setdefault(r["clip"], []).append(r)
    two = next(v for k, v in by_clip.items() if "two" in k)
    empty = next(v for k, v in by_clip.items() if "empty" in k)
    assert sorted(str(r["face"]) for r in two) == ["0", "1"] and len(empty) == 1
    assert str(empty[0]["face"]) in ("None", "")
    again = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 clips predicted, 2 already" in again.stderr
    assert len(output.read_text().splitlines()) == len(rows) + (suffix == ".csv")
