""""Why this expression?": heat maps over the face crops and the frame-importance strip, in the app.

Two sections, each added to its tab by one call to :func:`build_explain_section`:

- predict tab (``kind="predict"``): the page's current clip and a class (default: the predicted one);
- workbench tab (``kind="descriptor"``): the page's current clip and one descriptor row of the description table
  (class + text, as the workbench's learned rows), so an edited text shows its new map.

Both are API endpoints (``/explain_expression``, ``/explain_descriptor``) returning the overlays (gallery), the
frame-importance strip (a chart: HTML with an inline SVG), a note (with the untrained-weights warning the banner
gives) and the maps as arrays (JSON: per stream, (T, grid, grid) at the ViT's patch resolution, rounded; the
images are their bilinear upsampling to the crop), with the strip's rows under ``"strip"``.
"""
from __future__ import annotations

import dataclasses
import html
from contextlib import contextmanager
from typing import Iterator, Optional

import gradio as gr
import numpy as np
import pandas as pd
import torch

from .. import zero_gpu
from ..errors import DferclipError
from ..explain import (AUTO, OTHERS, Explanation, change_overlay, colorize, explain_clip, overlay,
                       upsampled_maps)
from ..runtime import weights_banner
from .charts import CHART_CSS, column_chart_html
from .context import AppContext
from .scheduler import BusyError

PREDICTED = "predicted class"
RAW = "none"  # the versus choice for the raw logit
ROLLOUT = "temporal relevancy"
OCCLUSION = "occlusion drop"
STRIP_COLUMNS = ["frame", "time (s)", f"{ROLLOUT} (%)", f"{OCCLUSION} (%)"]
STRIP_COLORS = {ROLLOUT: "#285adc", OCCLUSION: "#f08c1e"}  # as in the command line's picture (strip_image)


# --- the pieces ---------------------------------------------------------------------------------------
def strip_rows(ex: Explanation, times: list[float]) -> dict:
    """The frame-importance strip as data: per frame (1-based), its time, its share of the temporal relevancy
    and its share of the positive occlusion drops (both in %), so the two measures of "when" can be compared."""
    drops = np.clip(ex.frame_occlusion, 0, None)
    drops = drops / drops.sum() if drops.sum() > 0 else drops
    data = [[k + 1, round(times[k], 3) if k < len(times) else None, round(100 * float(share), 2),
             round(100 * float(drop), 2)] for k, (share, drop) in enumerate(zip(ex.frame_relevancy, drops))]
    return {"columns": STRIP_COLUMNS, "data": data}


def strip_chart(rows: dict) -> str:
    """The strip drawn: per frame a relevancy column and an occlusion column (HTML with an SVG)."""
    data = rows["data"]
    titles = [f"frame {r[0]}" + (f" · {r[1]:.2f} s" if r[1] is not None else "") for r in data]
    return column_chart_html("Frame importance (share per frame)", [str(r[0]) for r in data],
                             {ROLLOUT: [r[2] for r in data], OCCLUSION: [r[3] for r in data]}, STRIP_COLORS,
                             group_titles=titles, x_title="frame", unit=" %")


def _gallery(per_stream: dict, crops: list, times: list[float], draw, label) -> list[tuple]:
    """(picture, caption) per frame of each stream: ``draw(crop, frame's map)``, captioned with the frame's time
    and ``label(k, frame's map)``, kept short to fit a phone's three-column gallery."""
    items = []
    for name, frames in per_stream.items():
        prefix = f"{name} " if len(per_stream) > 1 else ""
        for k, (crop, m) in enumerate(zip(crops, frames)):
            t = f"{times[k]:.2f}s " if k < len(times) else ""
            items.append((draw(crop, m), f"{prefix}{t}{label(k, m)}"))
    return items


def overlay_items(ex: Explanation, crops: list, times: list[float]) -> list[tuple]:
    """(overlay, caption) per frame of each stream; the caption ends with the frame's relevancy share."""
    return _gallery(ex.maps, crops, times, overlay, lambda k, m: f"{100 * ex.frame_relevancy[k]:.0f}%")


def arrays(ex: Explanation, strip: dict) -> dict:
    """The JSON output: maps at the patch grid and the frame measures, rounded, and the strip's rows."""
    return {**ex.to_dict(decimals=3), "strip": strip}


def plain_line(target: str, rather: str) -> str:
    """The note's first line, in plain words: where to look."""
    return (f"**What in the clip points to {html.escape(target)}{rather}:** the warm parts of the heat maps "
            "(yellow to red on the colour scale under them) and the frames with the tallest bars in the "
            "frame-importance chart.")


def heat_legend(kind: str) -> str:
    """The heat maps' colour scale, low to high relevancy, in the colours :func:`~dferclip.explain.overlay` uses."""
    stops = ", ".join(f"rgb({r}, {g}, {b})" for r, g, b in colorize(np.linspace(0, 1, 9)[None])[0].tolist())
    return (f'<div class="heat-legend" id="explain-{kind}-legend" style="display: flex; align-items: center; '
            'gap: 0.5em; font-size: 0.85em; opacity: 0.9;"><span>low relevancy (the face shows through)</span>'
            f'<span class="heat-legend-bar" style="flex: 0 1 180px; height: 12px; border-radius: 3px; '
            f'background: linear-gradient(to right, {stops});"></span><span>high</span></div>')


def note_for(model, ex: Explanation) -> str:
    what, warning = weights_banner(model.weights_info)
    score = f"logit {ex.logit:.3f}" if ex.versus is None else \
        f"versus {html.escape(ex.versus)}: logit {ex.logit:.3f}, explained difference {ex.score:+.3f}"
    rather = f" rather than {html.escape(ex.versus)}" if ex.versus is not None else ""
    lines = [plain_line(ex.target, rather),
             (f"Details: **{html.escape(ex.target)}** {score}. Heat maps: gradient-weighted attention rollout "
              f"of the image tower ({ex.grid[0]}×{ex.grid[1]} patches); each frame's caption is its share of the "
              "temporal relevancy. The strip compares it with the drop of the explained score when the frame is "
              "replaced by its neighbours.")]
    if ex.versus is not None and ex.score < 0:
        lines.append(f"The clip matches {html.escape(ex.versus)} better than {html.escape(ex.target)}: the maps and "
                     "shares show what evidence for it there is, not why it lost.")
    if not ex.frame_relevancy.any():
        lines.append("No frame raised the explained score through the temporal attention, so every frame's share "
                     "is 0 %; the strip's occlusion bars still show which frames the score depends on.")
    if ex.stream_weights:
        lines.append("Streams (fusion weight): " + ", ".join(f"{k} {100 * w:.0f} %" for k, w in ex.stream_weights.items()
                                                             if k in ex.maps) + ".")
    if warning:
        lines.insert(1, f"⚠ **{html.escape(warning)}** ({html.escape(what)}): these maps explain meaningless "
                        "predictions.")
    return "\n\n".join(lines)


def _renders_of(model, record, model_key: str) -> Optional[dict]:
    """The clip's FineCLIPER renders made by the predict tab (same model), as model input; else None."""
    pred = getattr(record, "prediction", None)
    if record.model_key != model_key or not getattr(pred, "renders", None):
        return None
    ic = model.input_config
    return {k: ic.normalize(torch.from_numpy(np.stack(v)).permute(0, 3, 1, 2).float().div(255))
            for k, v in pred.renders.items()}


def _displayed_class(model, model_key: str, record) -> Optional[str]:
    """The top class of the prediction the page shows for the clip, when ``model_key`` made it (None otherwise:
    :func:`explain_clip` then finds the predicted class by the prediction's own path). The label is explained as
    shown, not recomputed: on CUDA the prediction runs under bf16 autocast, the explanation in fp32."""
    pred = getattr(record, "prediction", None)
    if record.model_key != model_key or pred is None or list(getattr(pred, "classes", [])) != model.class_names:
        return None
    return pred.top


def _clip_for(ctx: AppContext, model_key: Optional[str], record):
    """(model, key, the clip as that model's input)."""
    if record is None:
        raise gr.Error("No clip yet: predict one in the Predict tab first.", print_exception=False)
    model_key = model_key or ctx.registry.default_key
    model = ctx.model_for_event(model_key)
    video = record.video_for(model.input_config)
    if video is None:
        raise gr.Error("The current clip was prepared for another model: predict it again with this one.",
                       print_exception=False)
    return model, model_key, video


def change_items(delta: dict[str, np.ndarray], crops: list, times: list[float]) -> list[tuple]:
    """(change overlay, caption) per frame of each stream: red where the new text's map gained, blue lost; the
    caption ends with the frame's mean absolute change."""
    return _gallery(delta, crops, times, change_overlay, lambda k, d: f"Δ{100 * float(np.abs(d).mean()):.0f}%")


def _times(record) -> list[float]:
    return [f.time_s for f in record.ingest.frames]


def _outputs(model, ex: Explanation, record) -> tuple:
    times = _times(record)
    strip = strip_rows(ex, times)
    note = note_for(model, ex)
    if len(record.faces) > 1:  # which face these maps are of, while they stay on the page
        note = f"Face explained: **{html.escape(record.name)}**.\n\n{note}"
    return overlay_items(ex, record.ingest.crops, times), strip_chart(strip), note, arrays(ex, strip)


@contextmanager
def _long_job(ctx: AppContext, request) -> Iterator[None]:
    try:
        with ctx.scheduler.long(ctx.session(request), "explanation"):
            yield
    except BusyError as e:
        raise gr.Error(str(e), print_exception=False) from None


def _explain_on_device(model, video, **kwargs) -> Explanation:
    """:func:`explain_clip` in a GPU slot on ZeroGPU (the model by key); its maps at crop size are made here,
    from the patch-grid maps that cross back."""
    ex = zero_gpu.run(model, _explain_in_slot, video, **kwargs)
    if not ex.maps:
        ex.maps = upsampled_maps(ex.patch_maps, tuple(video.shape[-2:]))
    return ex


@zero_gpu.estimate(lambda video, **kwargs: 20 + 2 * video.shape[-4])
def _explain_in_slot(model, video, **kwargs) -> Explanation:
    ex = explain_clip(model, video, **kwargs)
    return dataclasses.replace(ex, maps={}) if zero_gpu.mode() is not None else ex


def _versus(choice: Optional[str]):
    """The versus choice as :func:`explain_clip` takes it (``RAW``: None, empty: ``AUTO``)."""
    return None if choice == RAW else (choice or AUTO)


# --- events ---------------------------------------------------------------------------------------------
def explain_expression(ctx: AppContext, model_key: Optional[str], record, class_choice: Optional[str],
                       versus: Optional[str] = AUTO) -> tuple:
    """(overlays, strip chart, note, arrays with the strip rows) for the page's clip and a class (``PREDICTED``
    or None: the model's top class), versus a contrast (``AUTO``: the neutral class; ``OTHERS``; a class;
    ``RAW``: none)."""
    model, model_key, video = _clip_for(ctx, model_key, record)
    cls = None if class_choice in (None, "", PREDICTED) else class_choice
    if cls is None:
        cls = _displayed_class(model, model_key, record)
    try:
        ex = _explain_on_device(model, video, class_index=cls, versus=_versus(versus),
                                renders=_renders_of(model, record, model_key))
    except DferclipError as e:
        raise gr.Error(str(e), print_exception=False) from None
    return _outputs(model, ex, record)


def explain_descriptor(ctx: AppContext, model_key: Optional[str], record, class_name: str, text: str,
                       versus: Optional[str] = AUTO, previous: Optional[dict] = None) -> tuple:
    """(overlays, strip chart, note, arrays, change overlays, new previous) for the page's clip and one descriptor
    (class + text), versus a contrast as :func:`explain_expression`. ``previous`` (the session's state): the
    last other text explained for the same clip and face, model, class and contrast; the change from its map is drawn
    and added to the arrays as ``change`` (new minus old, at the patch grid). The text and the class name are
    held to a description's bound (``MAX_TEXT_CHARS``) before anything else."""
    from ..text.descriptions import MAX_TEXT_CHARS
    from ..text.llm import check_length

    text, class_name = str(text or ""), str(class_name or "")
    try:
        check_length("descriptor text", text, MAX_TEXT_CHARS)
        check_length("class name", class_name, MAX_TEXT_CHARS)
    except DferclipError as e:
        raise gr.Error(str(e), print_exception=False) from None
    model, model_key, video = _clip_for(ctx, model_key, record)
    if not (text or "").strip():
        raise gr.Error("Pick a descriptor row (or type a text) to explain.", print_exception=False)
    try:
        ex = _explain_on_device(model, video, text=text, class_index=class_name or None, versus=_versus(versus),
                                renders=_renders_of(model, record, model_key))
    except DferclipError as e:
        raise gr.Error(str(e), print_exception=False) from None
    gallery, strip, note, data = _outputs(model, ex, record)
    # the same clip means the same face too: a clip's faces are explained apart
    key, text = [record.path, record.face, model_key, class_name or "", versus or AUTO], text.strip()
    changes = []
    if previous and previous.get("key") == key and previous.get("text") != text:
        old = previous["maps"]
        delta = {k: v - old[k] for k, v in ex.patch_maps.items() if k in old and old[k].shape == v.shape}
        changes = change_items(delta, record.ingest.crops, _times(record))
        data["change"] = {"from_text": previous["text"],
                          "maps": {k: np.round(v.astype(np.float64), 3).tolist() for k, v in delta.items()}}
        note += (f'\n\n**Change from "{html.escape(previous["text"])}"** ("Change with the last edit", below the '
                 "maps): red where this text's map gained relevancy, blue where it lost; each caption ends with the "
                 "frame's mean change.")
    elif previous and previous.get("key") == key:
        return gallery, strip, note, data, gr.update(), previous  # the same text again: keep the last change
    return gallery, strip, note, data, changes, {"key": key, "text": text, "maps": ex.patch_maps}


def _class_names(ctx: AppContext, model_key: Optional[str]) -> list[str]:
    try:
        return ctx.model(model_key or ctx.registry.default_key).class_names
    except DferclipError:
        return []


def class_choices(ctx: AppContext, model_key: Optional[str]) -> list[str]:
    return [PREDICTED] + _class_names(ctx, model_key)


def versus_choices(ctx: AppContext, model_key: Optional[str]) -> list[tuple[str, str]]:
    """(label, value) pairs: the default contrast, the other classes, none, then each class."""
    return [("neutral (the other classes if none)", AUTO), ("the other classes", OTHERS),
            ("nothing: the raw logit", RAW)] + [(n, n) for n in _class_names(ctx, model_key)]


def _row_of(evt: gr.SelectData, rows) -> tuple[str, str]:
    """(class, text) of the selected description-table row."""
    data = rows.values.tolist() if isinstance(rows, pd.DataFrame) else list((rows or {}).get("data", rows or []))
    r = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if r is None or not 0 <= r < len(data):
        return gr.update(), gr.update()
    return str(data[r][0]), str(data[r][1])


# after the opened section is drawn (the page is then long enough to scroll it to the top)
SCROLL_TO_EXPLANATION = """() => { setTimeout(() => document.getElementById('explain-predict')?.scrollIntoView(
    {behavior: 'smooth', block: 'start'}), 300); }"""


# --- the section ----------------------------------------------------------------------------------------
def _clicked_class(evt: gr.SelectData):
    """A class clicked in the expression label: the explain dropdown's new value, and the accordion opened."""
    name = evt.value if isinstance(evt.value, str) else (evt.value or {}).get("label")
    return (gr.Dropdown(value=name) if name else gr.update()), gr.Accordion(open=True)


def build_explain_section(ctx: AppContext, kind: str = "predict", table: Optional[gr.Dataframe] = None,
                          label: Optional[gr.Label] = None) -> list:
    """An accordion with the explanation of the page's clip (inside a tab, after the components it reads).
    ``kind="predict"``: for a class (clicking a class in ``label``, the prediction, explains that class);
    ``kind="descriptor"``: for a description-table row (``table``). Returns its overlays, strip, note and arrays."""
    run_kw = ctx.groups["long"]  # a long job: one per visitor, paced behind quick work (ui/scheduler.py)
    title = "Why this expression? Where and when the model matched it" if kind == "predict" else \
        "Where and when the current clip matches a descriptor"
    with gr.Accordion(title, open=False, elem_id=f"explain-{kind}") as accordion:
        with gr.Row():
            if kind == "predict":
                choice = gr.Dropdown(class_choices(ctx, ctx.registry.default_key), value=PREDICTED,
                                     label="Explain the class", scale=2, elem_id="explain-class")
            else:
                choice = gr.Textbox(label="Class", scale=1, elem_id="explain-row-class")
                text = gr.Textbox(label="Descriptor text (select a table row, or edit)", scale=3,
                                  elem_id="explain-row-text")
            versus = gr.Dropdown(versus_choices(ctx, ctx.registry.default_key), value=AUTO, scale=2,
                                 label="Rather than", info="what the maps contrast it with",
                                 elem_id=f"explain-{kind}-versus")
            inputs = [ctx.model_dropdown, ctx.clip, choice] + ([] if kind == "predict" else [text]) + [versus]
            button = gr.Button("Explain", variant="secondary", scale=1, elem_id=f"explain-{kind}-button")
        note = gr.Markdown(elem_id=f"explain-{kind}-note")
        gallery = gr.Gallery(label="Relevancy over the face crops", columns=8, height=260, object_fit="contain",
                             elem_id=f"explain-{kind}-maps", elem_classes=["explain-maps"])
        gr.HTML(heat_legend(kind), padding=False)
        if kind == "descriptor":
            changes = gr.Gallery(label="Change with the last edit",
                                 columns=8, height=200, object_fit="contain", elem_id="explain-descriptor-change",
                                 elem_classes=["explain-maps"])
            previous = gr.State(None)
        strip = gr.HTML(css_template=CHART_CSS, js_on_load=None, elem_id=f"explain-{kind}-strip")
        with gr.Accordion("Maps and frame shares as arrays (JSON)", open=False):
            data = gr.JSON(elem_id=f"explain-{kind}-json")
    outputs = [gallery, strip, note, data]
    ctx.model_selected.then(lambda key: gr.Dropdown(choices=versus_choices(ctx, key), value=AUTO),
                            ctx.model_dropdown, versus, api_visibility="private")
    if kind == "predict":
        def fn(key, record, c, v, request: gr.Request):
            with _long_job(ctx, request):
                return explain_expression(ctx, key, record, c, v)

        button.click(fn, inputs, outputs, api_name="explain_expression", **run_kw)
        choice.input(fn, inputs, outputs, api_visibility="private", **run_kw)
        versus.input(fn, inputs, outputs, api_visibility="private", **run_kw)
        ctx.model_selected.then(lambda key: gr.Dropdown(choices=class_choices(ctx, key), value=PREDICTED),
                                ctx.model_dropdown, choice, api_visibility="private")
        if label is not None:
            clicked = label.select(_clicked_class, None, [choice, accordion], api_visibility="private")
            clicked.then(None, js=SCROLL_TO_EXPLANATION)
            clicked.then(fn, inputs, outputs, api_visibility="private", **run_kw)
    else:
        inputs, outputs = inputs + [previous], outputs + [changes, previous]

        def fn(key, record, c, t, v, last, request: gr.Request):
            with _long_job(ctx, request):
                return explain_descriptor(ctx, key, record, c, t, v, last)

        button.click(fn, inputs, outputs, api_name="explain_descriptor", **run_kw)
        text.submit(fn, inputs, outputs, api_visibility="private", **run_kw)
        versus.input(fn, inputs, outputs, api_visibility="private", **run_kw)
        if table is not None:
            # a click in the table fills the row in; it explains only while the section is open and the row
            # has a text (a closed section costs nothing, an empty new row is no error)
            opened = gr.State(False)
            accordion.expand(lambda: True, None, opened, api_visibility="private", queue=False)
            accordion.collapse(lambda: False, None, opened, api_visibility="private", queue=False)

            def on_row(is_open, key, record, c, t, v, last, request: gr.Request):
                if not is_open or not str(t or "").strip():
                    return tuple(gr.skip() for _ in outputs)
                return fn(key, record, c, t, v, last, request)

            table.select(_row_of, [table], [choice, text], api_visibility="private").then(
                on_row, [opened] + inputs, outputs, api_visibility="private", **run_kw)
    return [gallery, strip, note, data]
