"""The annotated clip: decodes, keeps the clip's frames and duration, is H.264 or VP9, and shows the face box
and the running expression drawn over the source pixels."""
import json

import av
import numpy as np
import pytest

from app_helpers import feat_clip
from dferclip.cli import main as cli_main
from dferclip.predict import predict_clip
from dferclip.video.annotate import RunningLabel, annotate_prediction, video_encoder
from dferclip.video.decode import VideoReader


@pytest.fixture(scope="module")
def prediction(tiny_model):
    return predict_clip(tiny_model, feat_clip("single_face.mp4"))


def _frames(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        codec = stream.codec_context.name
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(stream)]
    return codec, frames


@pytest.mark.parametrize("asked", ["out.mp4", "out.webm"])
def test_annotated_clip_has_the_frames_and_the_drawing(prediction, tmp_path, asked):
    src = feat_clip("single_face.mp4")
    out = annotate_prediction(prediction, src, tmp_path / asked)
    assert out.is_file() and out == video_encoder(tmp_path / asked)[1]
    codec, frames = _frames(out)
    assert codec in ("h264", "vp9")
    assert codec == ("vp9" if out.suffix == ".webm" else "h264")
    info = prediction.ingest.source
    assert len(frames) == info.num_frames
    last_time = frames[-1][0]
    assert abs(last_time + 1 / info.fps - info.duration_s) < 2 / info.fps
    with VideoReader(src) as reader:
        source = {f.index: f.image for f in reader.iter_frames(range(reader.num_frames))}
    meta = prediction.ingest.frames[len(prediction.ingest.frames) // 2]  # a tracked frame with its face box
    assert meta.box is not None
    x0, y0, x1, y1 = (int(round(v)) for v in meta.box)
    drawn, original = frames[meta.index][1].astype(int), source[meta.index].astype(int)
    border = np.zeros(drawn.shape[:2], bool)
    border[y0 - 1 : y1 + 2, [x0 - 1, x0, x0 + 1, x1 - 1, x1, x1 + 1]] = True
    border[[y0 - 1, y0, y0 + 1, y1 - 1, y1, y1 + 1], x0 - 1 : x1 + 2] = True
    inside = np.zeros_like(border)
    inside[y0 + 10 : y1 - 10, x0 + 10 : x1 - 10] = True
    on_border = np.abs(drawn - original).sum(-1)[border].mean()
    in_face = np.abs(drawn - original).sum(-1)[inside].mean()
    assert on_border > 60 and in_face < 20  # the box is drawn over the source, the face itself left alone


def test_running_label_follows_the_timeline(prediction):
    timeline = prediction.timeline
    assert timeline is not None and len(timeline) >= 2
    labels = RunningLabel(prediction)
    for s, e, p in zip(timeline.start, timeline.end, timeline.probabilities):
        covering = [(s2, e2, p2) for s2, e2, p2 in zip(timeline.start, timeline.end, timeline.probabilities)
                    if s2 <= (s + e) / 2 <= e2]
        mean = np.mean([c[2] for c in covering], axis=0)
        assert labels.at((s + e) / 2) == (prediction.classes[int(np.argmax(mean))], pytest.approx(float(mean.max())))
    prediction_without = type(prediction)(**{**prediction.__dict__, "timeline": None})
    assert RunningLabel(prediction_without).at(0.5)[0] == prediction.top


def test_cli_annotate_says_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "annotated.mp4"
    assert cli_main(["predict", str(feat_clip("single_face.mp4")), "--model", "random:dferclip-tiny",
                     "--annotate", str(out), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)["annotated"]
    assert written["codec"] in ("H.264 mp4", "VP9 webm")
    codec, frames = _frames(written["path"])
    assert len(frames) == 72 and codec in ("h264", "vp9")
