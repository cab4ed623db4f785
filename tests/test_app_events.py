"""The app's event functions, called directly (no server): predict, model switching, banner, examples."""
import math

import gradio as gr
import numpy as np
import pandas as pd
import pytest
from app_helpers import TINY, corrupt_copy, feat_clip, served_app

from dferclip.errors import DferclipError
from dferclip.runtime import (
    EMOCLIP_SOURCE,
    FINECLIPER_SOURCE,
    ZERO_SHOT_SOURCE,
    ModelEntry,
    ModelRegistry,
    find_models,
    weights_banner,
)
from dferclip.ui.context import AppContext, select_model
from dferclip.ui.predict import (
    TIMELINE_COLUMNS,
    clear_outputs,
    example_clips,
    mark_stale,
    preview_note,
    run_prediction,
    stream_prediction,
    uses_face_mesh,
)

FINE_TINY = "random:fineclipper-tiny"


def label_probs(label: gr.Label) -> dict:
    """The class probabilities a returned ``gr.Label`` shows."""
    return {c["label"]: c["confidence"] for c in label.value["confidences"]}


def rows_frame(rows: dict) -> pd.DataFrame:
    """The timeline output's rows as a table."""
    return pd.DataFrame(rows["data"], columns=rows["columns"])


@pytest.fixture(scope="module")
def ctx():
    registry = ModelRegistry([ModelEntry(TINY, "tiny", "explicit"), ModelEntry(ZERO_SHOT_SOURCE, "zs", "zero-shot")],
                             dev="cpu")
    return AppContext(registry)


def test_predict_event_outputs(ctx):
    label, gallery, rows, note, renders, chart, record = run_prediction(ctx, str(feat_clip("single_face.mp4")), TINY)
    model = ctx.model(TINY)
    assert renders == [] and "Streams" not in note and not uses_face_mesh(ctx, TINY)  # DFER-CLIP: one stream
    assert set(label) == set(model.class_names) and math.isclose(sum(label.values()), 1.0, rel_tol=1e-5)
    assert len(gallery) == 16
    assert all(caption.endswith(" s") for _, caption in gallery)  # a face in every frame: time only
    timeline = rows_frame(rows)
    assert list(timeline.columns) == TIMELINE_COLUMNS
    assert set(timeline["expression"]) == set(model.class_names)
    assert timeline["time"].between(0, record.ingest.source.duration_s).all()
    assert (timeline["start"] < timeline["time"]).all() and (timeline["time"] < timeline["end"]).all()
    assert len(timeline) == len(record.prediction.timeline) * model.num_classes
    assert chart.count("<polyline") == model.num_classes  # the chart draws every expression
    assert "Face found in 16/16" in note and "ingestion" in note
    assert note.startswith("⚠ **Untrained weights")  # said first
    assert record.model_key == TINY and record.video.shape[1] == 16
    assert record.prediction.probabilities == label


def test_no_face_warns_and_still_predicts(ctx):
    with pytest.warns(UserWarning, match="No face found"):
        label, gallery, _, note, _, _, record = run_prediction(ctx, str(feat_clip("no_face.mp4")), TINY)
    assert math.isclose(sum(label.values()), 1.0, rel_tol=1e-5)
    assert "No face found" in note and all("centre crop" in c for _, c in gallery)
    assert not record.ingest.face_found


def test_streaming_event_label_first_then_the_timeline(ctx):
    """The page's predict event: the label (headed by the untrained-weights warning), crops and an empty
    timeline first; then timeline steps that leave the label and crops alone; the last step holds everything
    and matches the single-result event."""
    steps = list(stream_prediction(ctx, str(feat_clip("single_face.mp4")), TINY, progress=lambda *a, **k: None))
    first, middle, last = steps[0], steps[1:-1], steps[-1]
    assert first[0].label == "Expression · untrained weights: predictions are meaningless"
    assert len(first[1]) == 16 and first[2]["data"] == []  # no window scored yet
    assert "<polyline" not in first[5] and "Scoring the timeline" in first[5]
    assert middle and all(step[0] == step[1] == step[4] == gr.skip() for step in middle)  # label, crops left alone
    assert [len(step[6].prediction.timeline) for step in steps] == list(range(len(steps)))  # window by window
    classes = len(last[6].prediction.classes)
    assert [len(step[2]["data"]) for step in steps] == [k * classes for k in range(len(steps))]
    assert all(step[5].count("<polyline") == classes for step in steps[1:])  # each partial timeline drawn
    label, _, timeline, *_ = run_prediction(ctx, str(feat_clip("single_face.mp4")), TINY)
    assert label_probs(last[0]) == pytest.approx(label, abs=1e-6)
    pd.testing.assert_frame_equal(rows_frame(last[2]), rows_frame(timeline), check_dtype=False, atol=1e-6)


def test_bad_input_is_a_clean_error(ctx, tmp_path):
    with pytest.raises(gr.Error, match="Upload a clip"):
        run_prediction(ctx, None, TINY)
    with pytest.raises(gr.Error, match="Cannot use this file"):
        run_prediction(ctx, str(corrupt_copy(feat_clip("single_face.mp4"), tmp_path / "cut.mp4")), TINY)


def test_banner_tells_the_truth(ctx):
    banner = ctx.banner_text(TINY)
    assert "untrained weights: predictions are meaningless" in banner and "untrained" in banner
    text, warning = weights_banner({"kind": "dferclip", "trained": True, "source": "checkpoints/dfew-fold1"})
    assert warning is None and "dfew-fold1" in text
    assert weights_banner({"kind": "pretrained-clip", "trained": False, "source": "x"})[1]


def test_failed_model_switch_keeps_the_previous_model(ctx, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(UserWarning, match="Cannot load"):
        value, banner, good = select_model(ctx, ZERO_SHOT_SOURCE, TINY)
    assert value == good == TINY and "untrained" in banner
    assert select_model(ctx, TINY, TINY)[0] == TINY


PUBLISHED = ["published"] * 12  # the DFER-CLIP and EmoCLIP entries of dferclip/weights/published.json (zero-shot: last)


def test_model_discovery_order(tmp_path, monkeypatch):
    monkeypatch.setenv("DFERCLIP_CACHE", str(tmp_path / "cache"))  # nothing cached, and offline (conftest)
    ckpt = tmp_path / "checkpoints"
    (ckpt / "dfew-fold1").mkdir(parents=True)
    (ckpt / "dfew-fold1" / "config.json").write_text("{}")
    (ckpt / "mafw.pth").write_bytes(b"")
    monkeypatch.setenv("DFERCLIP_HUB_REPO", "org/dfer-clip-dfew, org/dfer-clip-mafw")
    monkeypatch.setenv("DFERCLIP_MODEL", TINY)
    entries = find_models(checkpoints_dir=ckpt)
    assert [e.origin for e in entries] == ["explicit", "checkpoints", "checkpoints", "hub", "hub", "default",
                                           "fineclipper", "emoclip", *PUBLISHED, "zero-shot"]
    assert entries[0].key == TINY and entries[5].key == "random" and entries[6].key == FINECLIPER_SOURCE
    assert entries[7].key == EMOCLIP_SOURCE and "untrained" in entries[7].label and "EmoCLIP" in entries[7].label
    monkeypatch.delenv("DFERCLIP_MODEL")
    monkeypatch.delenv("DFERCLIP_HUB_REPO")
    assert [e.origin for e in find_models(checkpoints_dir=tmp_path / "none")] == ["default", "fineclipper", "emoclip",
                                                                                  *PUBLISHED, "zero-shot"]


def test_fineclipper_is_offered_only_with_the_face_mesh(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mediapipe" else real(name, *a))
    monkeypatch.setenv("DFERCLIP_CACHE", str(tmp_path / "cache"))
    assert [e.origin for e in find_models(checkpoints_dir=tmp_path / "none")] == ["default", "emoclip", *PUBLISHED,
                                                                                  "zero-shot"]


def test_fineclipper_prediction_shows_its_streams_and_renders():
    """A FineCLIPER model through the predict event: the clip's landmark and parsing renders, each stream's
    fusion weight, and the caption stream reported off (the app makes no captions)."""
    registry = ModelRegistry([ModelEntry(FINE_TINY, "fine", "explicit")], dev="cpu")
    fctx = AppContext(registry)
    label, gallery, timeline, note, renders, _, record = run_prediction(fctx, str(feat_clip("single_face.mp4")),
                                                                        FINE_TINY)
    model = fctx.model(FINE_TINY)
    assert set(label) == set(model.class_names) and math.isclose(sum(label.values()), 1.0, rel_tol=1e-5)
    n = model.input_config.num_frames
    assert uses_face_mesh(fctx, FINE_TINY) and len(renders) == 2 * n
    captions = [c for _, c in renders]
    assert sum(c.startswith("landmarks") for c in captions) == n and sum(c.startswith("parsing") for c in captions) == n
    pred = record.prediction
    assert list(pred.streams) == list(model.streams) and pred.streams["caption"] == 0
    assert math.isclose(sum(pred.streams.values()), 1.0, rel_tol=1e-5)
    assert "Streams (fusion weight): video 33 %" in note and "caption off" in note and "face mesh" in note
    # a real face: the parsing renders are not all background and the landmark renders differ from the crops
    parsing = np.stack(pred.renders["parsing"])
    assert (parsing.reshape(-1, 3).any(axis=1)).mean() > 0.1
    assert len(timeline["data"]) == len(pred.timeline) * model.num_classes


def test_registry_loads_lazily_and_bounds_memory():
    from dferclip.config import CONFIG_DIR

    other = f"random:{CONFIG_DIR / 'dferclip-tiny.json'}"  # the same architecture under another source
    reg = ModelRegistry([ModelEntry(TINY, "a", "explicit"), ModelEntry(other, "b", "default")], dev="cpu",
                        max_loaded=1)
    assert not reg.is_loaded(TINY)
    model = reg.get()
    assert reg.is_loaded(TINY) and reg.get(TINY) is model and not model.training
    reg.get(other)
    assert reg.is_loaded(other) and not reg.is_loaded(TINY)
    with pytest.raises(DferclipError, match="on offer"):
        reg.get("not-on-offer")


def test_examples_and_clear():
    paths = [p for p, _ in example_clips()]
    assert any(p.endswith("astronaut_drift.webm") for p in paths)
    assert all(label for _, label in example_clips())
    label, gallery, timeline, note, renders, chart, record = clear_outputs()
    assert not label.value and label.label == "Expression" and record is None and renders == []
    assert timeline == {"columns": TIMELINE_COLUMNS, "data": []}
    assert "<polyline" not in chart and "Predict a clip" in chart


def test_a_clip_is_renormalised_for_a_model_with_other_input_statistics():
    """The page's clip, ingested for DFER-CLIP ([0, 1] pixels), scored by FineCLIPER (CLIP mean/std): the
    workbench must see exactly what a fresh ingest for FineCLIPER would give, not the DFER-CLIP tensor."""
    import dataclasses
    from types import SimpleNamespace

    import torch

    from dferclip.config import CLIP_MEAN, CLIP_STD, InputConfig
    from dferclip.ui.context import ClipRecord

    plain = InputConfig(image_size=64)
    clip_norm = dataclasses.replace(plain, mean=CLIP_MEAN, std=CLIP_STD)
    pixels = torch.rand(1, 16, 3, 64, 64)
    record = ClipRecord("c.webm", TINY, SimpleNamespace(video=plain.normalize(pixels), input_config=plain), None)
    torch.testing.assert_close(record.video_for(clip_norm), clip_norm.normalize(pixels))
    assert record.video_for(plain) is record.video
    assert record.video_for(dataclasses.replace(plain, image_size=224)) is None
    assert record.video_for(dataclasses.replace(clip_norm, num_frames=8)) is None


def test_a_slow_model_load_does_not_hold_up_the_other_models(monkeypatch):
    import threading

    import dferclip.runtime as runtime

    slow, release, started = "random:dferclip-vit-b-32", threading.Event(), threading.Event()
    real = runtime.load_model

    def load(key, device=None):
        if key == slow:  # stands in for a long download
            started.set()
            release.wait(30)
        return real(key, device=device)

    monkeypatch.setattr(runtime, "load_model", load)
    # eager: a real-size tower converted in the background would outlive the test (conftest waits for it)
    reg = ModelRegistry([ModelEntry(TINY, "a", "explicit"), ModelEntry(slow, "b", "default")], dev="cpu",
                        backend="eager")
    reg.get(TINY)
    loader = threading.Thread(target=reg.get, args=(slow,))
    loader.start()
    assert started.wait(30)
    try:
        assert reg.get(TINY) is not None and not reg.is_loaded(slow)  # served while the other one loads
    finally:
        release.set()
        loader.join(60)
    assert reg.is_loaded(slow)


def test_model_switch_marks_the_result_stale(ctx):
    *_, record = run_prediction(ctx, str(feat_clip("single_face.mp4")), TINY)
    label, note = mark_stale(ctx, record, ZERO_SHOT_SOURCE)
    assert "stale: from tiny" in label.label and set(label.constructor_args) == {"label"}  # the heading only
    assert note.startswith("**Stale: this result is from tiny. Press Predict expression to run zs.**")
    label, note = mark_stale(ctx, record, TINY)  # back to the model that made it
    assert "stale" not in label.label and "Stale" not in note and label_probs(label) == pytest.approx(
        record.prediction.probabilities)


def test_hevc_clip_gets_a_preview_note():
    assert "HEVC (H.265), which browsers cannot preview; the prediction still works" in preview_note(
        str(feat_clip("noface_face.mov")))
    assert preview_note(str(feat_clip("single_face.mp4"))) == "" and preview_note(None) == ""


def test_example_labels_tell_what_the_clips_show():
    labels = dict(example_clips())
    assert not any("Man on camera" in lbl for lbl in labels.values())
    woman = [lbl for path, lbl in labels.items() if path.endswith("WolfgangLanger_Pexels.mp4")]
    assert not woman or woman[0].startswith("Woman")


EMO_TINY = "random:emoclip-tiny"


def test_emoclip_in_the_app(tmp_path, monkeypatch):
    """A zero-shot-only model (EmoCLIP) through the served app (gradio_client; no module-wide served app here, since
    this one replaces ``app.demo`` while it runs): it predicts, its Descriptions tab says it has no learned
    prompts (no learned column, chart or metrics) and edits move its zero-shot scores, the explanations run,
    and the live tab crops as its ingestion does (bicubic) over its own number of frames."""
    from gradio_client import handle_file
    from PIL import Image
    from test_live import clip_frames
    from test_security import official_rows

    import dferclip.ui.live as live

    resizes = []
    crop = live.crop_square
    monkeypatch.setattr(live, "crop_square", lambda *a, **k: resizes.append(k.get("resize")) or crop(*a, **k))
    with served_app(EMO_TINY) as (appmod, client):
        model = appmod.demo.ctx.model(EMO_TINY)
        label, gallery, _, note, _, _ = client.predict(handle_file(str(feat_clip("single_face.mp4"))), EMO_TINY,
                                                       api_name="/predict")
        assert {c["label"] for c in label["confidences"]} == set(model.class_names)
        assert len(gallery) == model.input_config.num_frames and "untrained" in note.lower()
        streamed = client.predict(handle_file(str(feat_clip("single_face.mp4"))), EMO_TINY, api_name="/predict_stream")
        assert streamed[0]["value"]["label"] == label["label"] and streamed[2]["data"]  # the label, then a timeline
        status, _, zero, learned, *_, scores, contrib, metrics, _, _, intro = client.predict(
            EMO_TINY, official_rows(edit=True), "mean-embedding", api_name="/rescore_descriptions")
        said = "EmoCLIP has no learned prompts: its scores are zero-shot, by the class descriptions, through its own"
        assert said in status and said in intro and "DFER-CLIP" not in intro
        assert "n/a" not in str(scores) and not any("learned" in h for h in scores["headers"])
        assert {r[0] for r in contrib["data"]} == {"zero-shot"} and not learned["visible"]
        assert "zero-shot (EmoCLIP&#x27;s own video model)" in zero["value"] and "CLIP towers" not in zero["value"]
        unedited = client.predict(EMO_TINY, official_rows(), "mean-embedding", api_name="/rescore_descriptions")[-6]
        column = scores["headers"].index("zero-shot logit")
        assert scores["data"][0][column] != unedited["data"][0][column]  # the edit moved happiness's zero-shot logit
        summary, clip_table, *_ = client.predict(EMO_TINY, "baseline", "current", api_name="/compare_sets")
        assert clip_table["headers"] and not any("learned" in h for h in clip_table["headers"]) and said in summary
        overlays, _, _, data = client.predict(EMO_TINY, "predicted class", api_name="/explain_expression")
        assert len(overlays) == model.input_config.num_frames and data["maps"]["video"]
        *_, row, _ = client.predict(EMO_TINY, model.class_names[0], "raised cheeks", api_name="/explain_descriptor")
        assert row["target"].startswith('text "raised cheeks"')
        frames = clip_frames("single_face.mp4", count=model.input_config.num_frames + 1)
        for k, frame in enumerate(frames, start=1):
            path = tmp_path / f"frame{k}.jpg"
            Image.fromarray(frame).save(path, quality=90)
            _, live_label, live_status = client.predict(handle_file(str(path)), EMO_TINY, api_name="/live")
        n = model.input_config.num_frames
        assert live_label["value"]["label"] and f"{n}/{n} frames" in live_status
        assert resizes and set(resizes) == {model.input_config.resize} == {"bicubic"}


def test_switching_to_emoclip_keeps_the_edited_set_and_says_why_there_are_no_learned_scores():
    from dferclip.ui.workbench import switch_model_event
    from dferclip.workbench import starting_set

    emo_ctx = AppContext(ModelRegistry([ModelEntry(TINY, "tiny", "explicit"), ModelEntry(EMO_TINY, "emo", "emoclip")],
                                       dev="cpu"))
    dfew = starting_set("DFEW")
    edited = dfew.with_descriptions([["a broad smile"]] + dfew.descriptions[1:])
    state = {"baseline": dfew.to_dict(), "previous": dfew.to_dict(), "current": edited.to_dict(),
             "combine": "mean-embedding"}
    try:
        _, kept, status, *_ = switch_model_event(emo_ctx, EMO_TINY, state, "mean-embedding", None, None)
    finally:
        emo_ctx.close()  # its background conversions too
    assert kept["current"] == edited.to_dict() and "differs from baseline in: happiness" in status
    assert "EmoCLIP has no learned prompts" in status and "Learned scores need" not in status
