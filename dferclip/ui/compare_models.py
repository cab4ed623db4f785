"""The Predict tab's "Compare models" section (api ``/compare_models``): the same clip through two or three
models side by side, each with its label, probabilities and timeline. The clip is decoded and its face found
once for all of them (:func:`dferclip.predict.prepare_clips`); each model then scores its own frames."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Optional

import gradio as gr
import pandas as pd

from ..errors import DataError, DferclipError, VideoError
from ..predict import Prediction, predict_clip, prepare_clips, prepare_faces
from ..runtime import EMOCLIP_SOURCE, FINECLIPER_SOURCE
from .charts import CHART_CSS
from .errors import user_error
from .predict import APP_LIMITS, timeline_chart
from .scheduler import BusyError

MAX_COMPARED = 3  # models a comparison runs: each is a full prediction


def default_picks(ctx) -> list[str]:
    """The page's first model and, when on offer, a FineCLIPER and an EmoCLIP."""
    keys = [e.key for e in ctx.registry.entries]
    picks = [ctx.registry.default_key] + [k for k in (FINECLIPER_SOURCE, EMOCLIP_SOURCE) if k in keys]
    return list(dict.fromkeys(picks))[:MAX_COMPARED]


def checked_keys(ctx, keys) -> list[str]:
    """Two or three distinct models on offer here (a DataError says what is wrong)."""
    if isinstance(keys, str):
        keys = [keys]
    keys = list(dict.fromkeys(str(k) for k in (keys or []) if k))
    if not 2 <= len(keys) <= MAX_COMPARED:
        raise DataError(f"pick two or three models to compare ({len(keys)} picked)")
    for key in keys:
        ctx.registry.entry(key)  # only models on offer: never a path or name a visitor makes up
    return keys


def picked_face(record, video: Optional[str]):
    """The face the visitor picked in this clip's prediction (its ``IngestResult``), None for the main face."""
    if record is None or not video or len(getattr(record, "faces", ())) < 2 or not record.face:
        return None
    ours, theirs = Path(record.path), Path(video)
    if not (ours.is_file() and theirs.is_file()):
        return None
    # the same upload: Gradio keeps a file sent again under its name in a folder of its own
    same = ours == theirs or (ours.name == theirs.name and ours.stat().st_size == theirs.stat().st_size)
    return record.ingest if same else None


def compare_models_event(ctx, video: Optional[str], keys, session: str = "anonymous", record=None) -> tuple:
    """(summary, probabilities table, timelines, data) for the clip under each picked model: the face picked in the
    Predict tab (``record``, the visitor's clip record) when it is this clip's, else the main face."""
    if not video:
        raise user_error("Upload a clip or click an example first: the models are compared on it.")
    try:
        keys = checked_keys(ctx, keys)
        with ctx.scheduler.long(session, "model comparison"):
            models = [ctx.model(k) for k in keys]
            face = picked_face(record, video)
            if face is None:
                clips = prepare_clips(models, video, limits=APP_LIMITS, dev=ctx.registry.device)
            else:
                clips = [c[0] for c in prepare_faces(models, video, limits=APP_LIMITS, dev=ctx.registry.device,
                                                     same_face_as=face)]
            # the same models (the registry keeps three); got again in case other visitors' picks let one go
            preds = [predict_clip(ctx.model(key), video, dev=ctx.registry.device, prepared=clip)
                     for key, clip in zip(keys, clips)]
    except VideoError as e:
        raise user_error(f"Cannot use this file: {e}") from None
    except (DferclipError, BusyError) as e:
        raise user_error(e) from None
    labels = [ctx.registry.entry(k).label for k in keys]
    summary = summary_md(labels, preds)
    if face is not None:
        summary = f"Face compared: **{html.escape(record.name)}** (picked above).\n\n{summary}"
    return summary, probabilities_table(labels, preds), timelines_html(labels, preds), {
        "models": [{"model": k, "label": lbl, "top": p.top, "probabilities": p.probabilities,
                    "timeline": p.timeline.rows(p.classes) if p.timeline is not None else []}
                   for k, lbl, p in zip(keys, labels, preds)]}


def summary_md(labels: list[str], preds: list[Prediction]) -> str:
    lines = ["The clip was decoded and its face found once; each model then read its own frames."]
    for i, (label, pred) in enumerate(zip(labels, preds), start=1):
        faces = sum(1 for f in pred.ingest.frames if f.box is not None)
        trained = "" if pred.weights.get("trained") else " · **untrained weights: meaningless**"
        lines.append(f"{i}. **{html.escape(label)}**: **{html.escape(pred.top)}** "
                     f"{100 * pred.probabilities[pred.top]:.0f} % (face in {faces} of {len(pred.ingest.frames)} "
                     f"frames){trained}")
    return "\n".join(lines)


def probabilities_table(labels: list[str], preds: list[Prediction]) -> pd.DataFrame:
    """Every class of any model, a column of % per model ("" where a model has no such class)."""
    classes = list(dict.fromkeys(c for p in preds for c in p.classes))
    table = {"class": classes}
    for i, (label, pred) in enumerate(zip(labels, preds), start=1):
        table[f"{i}. {label.split(' (')[0][:32]} %"] = [f"{100 * pred.probabilities[c]:.1f}" if c in pred.probabilities else ""
                                         for c in classes]
    return pd.DataFrame(table)


def timelines_html(labels: list[str], preds: list[Prediction]) -> str:
    return "".join(timeline_chart(p, title=f"{i}. {label}: expression over time")
                   for i, (label, p) in enumerate(zip(labels, preds), start=1))


def build_compare_models_section(ctx, video) -> None:
    """The section (in the Predict tab, under the prediction) and its event; ``video``: the tab's clip input."""
    with gr.Accordion("Compare models on this clip (side by side)", open=False, elem_id="compare-models"):
        with gr.Row():
            picks = gr.Dropdown(ctx.registry.choices(), value=default_picks(ctx), multiselect=True,
                                max_choices=MAX_COMPARED, label="Models (two or three)", scale=4,
                                elem_id="compare-models-picks")
            go = gr.Button("Compare models", variant="primary", scale=1, elem_id="compare-models-button")
        summary = gr.Markdown(elem_id="compare-models-summary")
        table = gr.Dataframe(label="Probabilities (%) under each model", interactive=False,
                             elem_id="compare-models-table")
        charts = gr.HTML(css_template=CHART_CSS, elem_id="compare-models-timelines")
        data = gr.JSON(visible=False)

    def compare(clip, keys, record, request: gr.Request = None):
        return compare_models_event(ctx, clip, keys, ctx.session(request), record)

    go.click(compare, [video, picks, ctx.clip], [summary, table, charts, data], api_name="compare_models",
             **ctx.groups["long"])
