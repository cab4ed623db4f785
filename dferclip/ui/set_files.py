"""The Descriptions tab's "Save, download, upload, diff" section. Public mode keeps a visitor's saved sets in
their session (``view.own_sets``), never on the server's disk; names are names, never paths, and shipped
sets cannot be saved over."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..errors import DferclipError
from ..text.descriptions import read_description_file
from .errors import user_error
from .workbench import (
    WorkbenchView,
    _quick,
    _rows_df,
    _state,
    _workbench,
    check_save_name,
    diff_markdown,
    has_unsaved_edits,
    pick_set,
    saved_set_names,
    set_file,
    started,
    validated_save_name,
    workbench_outputs,
)


def build_set_files_section(ctx, view: WorkbenchView) -> None:
    """The section's components and events (api ``/save_descriptions``, ``/download_descriptions``,
    ``/upload_descriptions``, ``/diff_descriptions``)."""
    public = ctx.policy.public
    with gr.Accordion("Save, download, upload, diff", open=False):
        with gr.Row(equal_height=True):
            name_box = gr.Textbox(label="Name", placeholder="letters, digits, - _ .")
            with gr.Column(min_width=160):
                save_btn = gr.Button("Save")
                save_msg = gr.Markdown(elem_id="save-message")
            download = gr.DownloadButton("Download current set (.json)", value=set_file(view.first.to_dict()),
                                         elem_id="download-set")
            upload = gr.File(label="Upload a set (.json)", file_types=[".json"])
        with gr.Row():
            names = saved_set_names(ctx, None)
            diff_a = gr.Dropdown(["baseline", "previous"] + names, value="baseline", label="A", elem_id="diff-a")
            diff_b = gr.Dropdown(["current", "baseline", "previous"] + names, value="current", label="B",
                                 elem_id="diff-b")
            diff_btn = gr.Button("Diff")
        diff_md = gr.Markdown()

    def save(model_key, name, state_v, own):
        wb = _workbench(ctx, model_key, state_v)
        own = dict(own or {})
        try:
            validated_save_name(name)
            if public:  # the visitor's session keeps it; the server's disk is not touched
                version = own[name]["version"] + 1 if name in own else 1
                wb.save_as(name, version=version, edited_in="dferclip workbench")
                own[name] = wb.current.to_dict()
                where = "in this session (download it to keep it)"
            else:
                path = wb.save(name, edited_in="dferclip workbench")
                where = f"as {path.name}"
        except DferclipError as e:
            raise user_error(e) from None
        choices = saved_set_names(ctx, own)
        saved_line = (f"{wb.current.name} v{wb.current.version} · same as baseline: saved {where}, it is the new "
                      "baseline.")
        return (_state(wb), own, f"Saved {name} version {wb.current.version} {where}; it is the new baseline.",
                gr.update(choices=choices), gr.update(choices=["baseline", "previous"] + choices),
                gr.update(choices=["current", "baseline", "previous"] + choices), saved_line)

    def do_download(model_key, state_v):
        return set_file((state_v or {}).get("current") or view.first.to_dict())

    def do_upload(model_key, file, combine_v, clip, eval_set, state_v, stash_v, request: gr.Request = None):
        with _quick(ctx, request):
            if file is None:
                raise user_error("no file uploaded")
            try:
                ds = read_description_file(Path(getattr(file, "name", file)))
            except DferclipError as e:
                raise user_error(e) from None
            wb = _workbench(ctx, model_key, None)
            wb.start_from(ds)
            wb.combine = combine_v
            out = (_rows_df(ds), gr.update(choices=ds.classes, value=[])) + workbench_outputs(wb, clip, eval_set)
            note = ""
            if has_unsaved_edits(state_v):
                stash_v, note = state_v, "Your unsaved edits were put aside: **Restore edits** brings them back."
            return started(ds.classes, out, stash_v, note)

    def do_diff(model_key, a, b, state_v, own):
        wb = _workbench(ctx, model_key, state_v)
        try:
            return diff_markdown(pick_set(ctx, wb, a, own), pick_set(ctx, wb, b, own), a, b)
        except DferclipError as e:
            raise user_error(e) from None

    # the name is checked first, in a step whose only output is the save message, so a bad name marks that
    # message alone, not the diff pickers and the status beside it
    save_btn.click(check_save_name, name_box, save_msg, api_visibility="private").success(
        save, [ctx.model_dropdown, name_box, view.state, view.own_sets],
        [view.state, view.own_sets, save_msg, view.saved, diff_a, diff_b, view.status], api_name="save_descriptions")
    # the download button always holds the current set, so one click downloads it
    view.state.change(do_download, [ctx.model_dropdown, view.state], [download], api_name="download_descriptions")
    upload.upload(do_upload, [ctx.model_dropdown, upload, view.combine, ctx.clip, view.eval_state, view.state,
                              view.stash], view.start_outputs, api_name="upload_descriptions", **ctx.groups["quick"])
    diff_btn.click(do_diff, [ctx.model_dropdown, diff_a, diff_b, view.state, view.own_sets], [diff_md],
                   api_name="diff_descriptions")
