"""Share the Descriptions tab by link: the state travels in the link itself (:mod:`dferclip.share`), so a link
outlives any restart of the Space and needs no storage.

"Copy link" turns the page's model, current descriptions (edits included), combine mode and example clip into
a URL (the ``/share_link`` endpoint). Opening that URL restores them: the model is selected, the example clip
predicted, the set scored, the Descriptions tab shown. A malformed, truncated or tampered link gives one
warning and the default page. ``/open_link`` does the same for API clients and returns the restored set.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gradio as gr

from ..errors import DferclipError
from ..files import sha256_of
from ..share import PARAM, SharedState, ShareError, link, state_from_link
from .context import AppContext
from .predict import example_clips, stream_prediction
from .workbench import _rows, _rows_df, _workbench, class_set_choices, starting_set, workbench_outputs

SHARE_NOTE = ("The link holds the model, the descriptions with your edits, the combine mode and the example clip: "
              "anyone who opens it sees the same scores. Nothing is stored on the server.")


@dataclass
class ShareParts:
    """The components the restore fills: the Predict tab's and the Descriptions tab's."""
    tabs: gr.Tabs
    video: gr.Video
    predict_outputs: list  # label, crops, timeline data, note, renders, timeline chart, clip record
    table: gr.Dataframe
    combine: gr.Radio
    class_set: gr.Radio
    score_outputs: list  # the workbench's scoring outputs (ui.workbench.workbench_outputs)


def page_base(request) -> str:
    """The address visitors open the app at: the Space's own host when on a Space, else the request's host
    (behind a proxy, the host and scheme it forwards)."""
    space = os.environ.get("SPACE_HOST", "").strip()
    if space:
        return f"https://{space}/"
    headers = getattr(request, "headers", None) or {}
    host = headers.get("x-forwarded-host") or headers.get("host") or "127.0.0.1:7860"
    scheme = headers.get("x-forwarded-proto") or getattr(getattr(request, "url", None), "scheme", None) or "http"
    return f"{scheme.split(',')[0].strip()}://{host.split(',')[0].strip()}/"


def _example_name(clip) -> Optional[str]:
    """The file name of the page's clip when it is one of the app's examples: Gradio serves a copy of the
    example, so the name and the bytes must match (a visitor's own clip never goes into a link)."""
    path = Path(getattr(clip, "path", None) or "")
    example = _example_path(path.name) if path.name else None
    if example is None or not path.is_file():
        return None
    try:
        same = path.stat().st_size == Path(example).stat().st_size and sha256_of(path) == sha256_of(example)
    except OSError:
        return None
    return path.name if same else None


def _example_path(name: str) -> Optional[str]:
    return next((p for p, _ in example_clips() if Path(p).name == name), None)


def share_link_event(ctx: AppContext, model_key: Optional[str], rows, state_v, combine_v, clip, request=None
                     ) -> tuple[str, str]:
    """(link, note) for the tab as it is, table edits included."""
    model_key = model_key or ctx.registry.default_key
    wb = _workbench(ctx, model_key, state_v)
    try:
        wb.edit_rows(_rows(rows))
        url = link(page_base(request), SharedState(model_key, wb.current, combine_v or wb.combine,
                                                   _example_name(clip)))
    except DferclipError as e:
        raise gr.Error(str(e), print_exception=False) from None
    note = SHARE_NOTE
    if getattr(clip, "path", None) and _example_name(clip) is None:
        note += " **Your own clip is not in the link** (it stays with you): the link opens without a clip."
    return url, note


def restored(ctx: AppContext, token: str) -> tuple[SharedState, list[str]]:
    """The link's state, checked against this app: (state, what could not be restored, in words)."""
    state = state_from_link(token)
    missing = []
    try:
        ctx.registry.entry(state.model)
    except DferclipError:
        missing.append(f"the model {state.model[:80]!r} is not offered here; the page's default runs instead")
        state.model = ctx.registry.default_key
    if state.clip is not None and _example_path(state.clip) is None:
        missing.append(f"the example clip {state.clip!r} is not in this app")
        state.clip = None
    return state, missing


def restore_outputs(ctx: AppContext, parts: ShareParts, state: SharedState, missing: list[str], share_note) -> dict:
    """The restored page: model, clip and its prediction, the set scored, the Descriptions tab."""
    out: dict = {ctx.model_dropdown: state.model, ctx.banner: ctx.banner_text(state.model),
                 ctx.last_good: state.model, parts.tabs: gr.Tabs(selected="descriptions")}
    record = None
    if state.clip is not None:
        path = _example_path(state.clip)
        last = None
        for last in stream_prediction(ctx, path, state.model, progress=lambda *a, **k: None):
            pass
        out.update(zip(parts.predict_outputs, last))
        out[parts.video] = path
        record = last[-1]
    ds = state.descriptions
    wb = _workbench(ctx, state.model, None)
    shipped = starting_set(ds.class_set) if ds.class_set in class_set_choices() else None
    wb.start_from(shipped if shipped is not None and shipped.classes == ds.classes else ds)
    wb.combine = state.combine
    wb.edit_rows(_rows(_rows_df(ds)))
    note = "Opened from a shared link." + "".join(f" ⚠ {html.escape(m)}." for m in missing)
    out.update(zip(parts.score_outputs, workbench_outputs(wb, record, None, note)))
    clip = f", the example clip {html.escape(state.clip)}" if state.clip else ""
    out[share_note] = (f"**Opened from a shared link**: {html.escape(ctx.registry.entry(state.model).label)}, "
                       f"{html.escape(ds.name)} with its edits, combine {state.combine}{clip}."
                       + "".join(f" ⚠ {html.escape(m)}." for m in missing))
    out[parts.table] = _rows_df(wb.current)
    out[parts.combine] = state.combine
    out[parts.class_set] = ds.class_set if ds.class_set in class_set_choices() else "custom"
    return out


def build_share_section(ctx: AppContext, demo: gr.Blocks, parts: ShareParts, workbench_tab: gr.Tab) -> None:
    """The "Share" row at the end of the Descriptions tab, the ``/share_link`` and ``/open_link`` endpoints,
    and the restore of a link when the page opens."""
    with workbench_tab:
        with gr.Accordion("Share this state by link", open=True, elem_id="share-section"):
            with gr.Row():
                share_btn = gr.Button("Copy link", elem_id="share-button", scale=0, min_width=140)
                url = gr.Textbox(label="Link", buttons=["copy"], interactive=False, elem_id="share-link", scale=4,
                                 lines=1, max_lines=3)
            note = gr.Markdown(elem_id="share-note", elem_classes=["hint"])
            opened = gr.Textbox(visible=False, elem_id="open-link")  # the API's link input

    state = parts.score_outputs[0]

    def share(model_key, rows, state_v, combine_v, clip, request: gr.Request):
        with ctx.scheduler.quick():
            return share_link_event(ctx, model_key, rows, state_v, combine_v, clip, request)

    share_btn.click(share, [ctx.model_dropdown, parts.table, state, parts.combine, ctx.clip], [url, note],
                    api_name="share_link", **ctx.groups["quick"])
    # the page's state copied into the address bar too, so the browser's own share and bookmarks carry it
    url.change(None, url, None, js="(u) => { if (u) { try { history.replaceState(null, '', u); } catch (e) {} "
                                   "try { navigator.clipboard.writeText(u); } catch (e) {} } }")

    targets = [ctx.model_dropdown, ctx.banner, ctx.last_good, parts.tabs, parts.video, *parts.predict_outputs,
               parts.table, parts.combine, parts.class_set, *parts.score_outputs, note]

    def open_from(token: str):
        try:
            state_, missing = restored(ctx, token)
        except ShareError as e:
            gr.Warning(f"This link could not be opened: {e}. The page starts as usual.")
            return {}
        try:
            out = restore_outputs(ctx, parts, state_, missing, note)
            gr.Info("Opened a shared link: its model, descriptions and clip are restored (details at the end of the "
                    "Descriptions tab).")
            return out
        except DferclipError as e:
            gr.Warning(f"This link could not be opened: {e}. The page starts as usual.")
            return {}

    def on_load(request: gr.Request):
        token = (getattr(request, "query_params", None) or {}).get(PARAM)
        return {**dict.fromkeys(targets, gr.skip()), **(open_from(token) if token else {})}

    def open_link(link_text: str):
        """API: the state a link carries, restored (or the reason it cannot be)."""
        try:
            state_, missing = restored(ctx, str(link_text or ""))
        except ShareError as e:
            raise gr.Error(f"This link could not be opened: {e}", print_exception=False) from None
        return {"model": state_.model, "combine": state_.combine, "clip": state_.clip,
                "set": state_.descriptions.to_dict(), "not_restored": missing}

    demo.load(on_load, None, targets, api_visibility="private", **ctx.groups["predict"])
    gr.Button(visible=False).click(open_link, opened, gr.JSON(visible=False), api_name="open_link",
                                   **ctx.groups["quick"])

