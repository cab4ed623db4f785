"""The app served on 127.0.0.1 (in process) and driven through its API with gradio_client."""
import math

import pytest
from app_helpers import TINY, corrupt_copy, feat_clip
from gradio_client import Client, handle_file


def test_api_endpoints(served):
    _, client = served
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/predict", "/predict_stream", "/select_model"} <= set(api)
    for name in ("/predict", "/predict_stream"):
        assert [p["parameter_name"] for p in api[name]["parameters"]] == ["video", "model_key"]


def test_predict_a_face_clip(served):
    appmod, client = served
    label, gallery, timeline, note, renders, chart = client.predict(handle_file(str(feat_clip("single_face.mp4"))),
                                                                    TINY, api_name="/predict")
    classes = appmod.demo.ctx.model(TINY).class_names
    assert {c["label"] for c in label["confidences"]} == set(classes)
    assert math.isclose(sum(c["confidence"] for c in label["confidences"]), 1.0, rel_tol=1e-4)
    assert label["label"] == max(label["confidences"], key=lambda c: c["confidence"])["label"]
    assert len(gallery) == 16 and all(item["caption"].endswith(" s") for item in gallery)
    # the timeline covers the clip: windows from 0 s to its end (2.4 s), as rows and drawn
    assert timeline["columns"] == ["time", "expression", "probability", "start", "end"]
    rows = timeline["data"]
    times = sorted({r[0] for r in rows})
    assert len(rows) == len(times) * len(classes) and len(times) >= 2
    assert 0 < times[0] < times[-1] < 2.42  # window centres inside the 2.4 s clip
    assert all(r[3] < r[0] < r[4] <= 2.42 for r in rows)  # each window's span around its centre
    assert chart.count("<polyline") == len(classes) and "<script" not in chart
    assert "Face found in 16/16" in note and "2.4 s" in note
    assert renders == []  # DFER-CLIP has no face-mesh streams


def test_no_face_clip_warns(served):
    _, client = served
    job = client.submit(handle_file(str(feat_clip("no_face.mp4"))), TINY, api_name="/predict")
    label, gallery, _, note, _, _ = job.result(timeout=120)
    assert "No face found" in note and all("centre crop" in g["caption"] for g in gallery)
    assert math.isclose(sum(c["confidence"] for c in label["confidences"]), 1.0, rel_tol=1e-4)
    logs = []
    while not job.communicator.updates.empty():
        update = job.communicator.updates.get_nowait()
        if getattr(update, "log", None):
            logs.append(update.log)
    assert any("No face found" in text and level == "warning" for text, level in logs), logs


def test_corrupt_file_is_a_clean_error(served, tmp_path):
    _, client = served
    bad = corrupt_copy(feat_clip("single_face.mp4"), tmp_path / "cut.mp4")
    with pytest.raises(Exception, match="Cannot use this file") as info:
        client.predict(handle_file(str(bad)), TINY, api_name="/predict")
    assert type(info.value).__name__ == "AppError"
    assert "Traceback" not in str(info.value)


def test_switching_to_an_unavailable_model_keeps_the_current_one(served):
    _, client = served
    value, banner = client.predict("pretrained:dferclip-vit-b-32:openai", api_name="/select_model")
    assert value == TINY and "untrained weights: predictions are meaningless" in banner


def test_streaming_endpoint_gives_the_label_before_the_timeline_and_ends_as_predict(served):
    """/predict_stream yields the label (and crops) while the timeline is still empty, then grows the timeline
    window by window; its last outputs equal /predict's single result."""
    _, client = served
    clip = handle_file(str(feat_clip("single_face.mp4")))
    job = client.submit(clip, TINY, api_name="/predict_stream")
    first = next(iter(job))  # the first yield, as soon as it arrives
    job.result(timeout=120)
    steps = job.outputs()  # every yield, in order
    label, gallery, timeline, note, _, chart = first  # the page's outputs: the label comes as an update
    assert label["value"]["label"] and len(gallery) == 16
    assert timeline["data"] == [] and "<polyline" not in chart  # no window scored yet
    assert "so far" in note
    # one yield per window (the client patches earlier yields' data in place, so only their count is checked)
    counts = [len({row[0] for row in step[2]["data"]}) for step in steps]
    assert counts[0] == 0 and counts == sorted(counts) and len(steps) == 1 + counts[-1] >= 3
    final = client.predict(clip, TINY, api_name="/predict")
    last_label, last_gallery, last_timeline = steps[-1][0]["value"], steps[-1][1], steps[-1][2]
    assert last_label["label"] == final[0]["label"] and len(last_gallery) == len(final[1]) == 16
    assert confidences(last_label) == pytest.approx(confidences(final[0]), abs=1e-6)
    assert [r[:2] for r in last_timeline["data"]] == [r[:2] for r in final[2]["data"]]
    assert [r[2] for r in last_timeline["data"]] == pytest.approx([r[2] for r in final[2]["data"]], abs=1e-6)
    last = steps[-1]
    assert "so far" not in last[3] and last[3].split("Time:")[0] == final[3].split("Time:")[0]


def confidences(label: dict) -> dict:
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def test_annotated_video_of_the_last_prediction(served):
    import av

    _, shared = served
    client = Client(shared.src, verbose=False, download_files=False)  # a new visitor: no clip in its session yet
    assert "Predict a clip first" in str(pytest.raises(Exception, client.predict, api_name="/annotate").value)
    client.predict(handle_file(str(feat_clip("single_face.mp4"))), TINY, api_name="/predict")
    video = client.predict(api_name="/annotate")
    path = video.get("path") or video["video"]["path"] if isinstance(video, dict) else video
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "vp9")
        assert sum(1 for _ in container.decode(stream)) > 16

