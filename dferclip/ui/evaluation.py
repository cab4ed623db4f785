"""The Descriptions tab's "Evaluation set" section: labelled clips embedded once, then UAR/WAR, per-class recall
and confusion of every edit. In public mode it has no input that names a file of the server, neither in the
page nor in the API."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..errors import DferclipError
from ..workbench import numeric_labels_allowed
from .errors import user_error
from .predict import APP_LIMITS
from .workbench import WorkbenchView, _eval_cache, _workbench, evaluation_clips, workbench_outputs


def build_evaluation_section(ctx, view: WorkbenchView) -> None:
    """The section's components (the metrics tables are the editor's scoring outputs, shown here) and its
    event (api ``/load_evaluation_set``)."""
    limit = f"at most {ctx.policy.max_eval_clips} clips"
    with gr.Accordion("Evaluation set (clips + labels)", open=False):
        if ctx.policy.public:
            gr.Markdown(f"Upload the clips with a CSV of `file name,label` rows (labels: class names or 0-based "
                        f"indices; {limit}). Embeddings are computed once.")
            files_box = gr.File(file_count="multiple", label="Clips and labels CSV (upload)")
            load_btn = gr.Button("Load evaluation set")
            server_inputs = []
        else:
            gr.Markdown(f"A CSV of `path,label` rows (labels: class names or 0-based indices; {limit}) with the "
                        "clips, as uploaded files or a folder on this machine; or a `datasets` folder. "
                        "Embeddings are computed once.")
            with gr.Row():
                files_box = gr.File(file_count="multiple", label="Clips and labels CSV (upload)")
                with gr.Column():
                    folder_box = gr.Textbox(label="or: folder on this machine with the clips")
                    csv_box = gr.Textbox(label="and its labels CSV (path)")
                    hf_box = gr.Textbox(label="or: datasets folder (save_to_disk)")
                    load_btn = gr.Button("Load evaluation set")
            server_inputs = [folder_box, csv_box, hf_box]
        view.metrics.render()
        view.recall.render()
        view.confusion.render()

    def load(model_key, files, folder, csv_path, hf_path, state_v, clip, request, progress):
        wb = _workbench(ctx, model_key, state_v)
        try:
            clips = evaluation_clips(ctx, wb.current.classes, files, folder, csv_path, hf_path,
                                     numeric=numeric_labels_allowed(wb.current))
            with ctx.scheduler.long(ctx.session(request), "evaluation set"):  # paced clip by clip
                embedded = wb.set_evaluation(
                    clips, cache=_eval_cache(ctx), limits=APP_LIMITS,
                    progress=lambda i, n, p: progress(i / max(n, 1), desc=f"embedding {Path(p).name}"))
        except DferclipError as e:
            raise user_error(e) from None
        embedded.model_key = model_key
        return (embedded,) + workbench_outputs(wb, clip, embedded, f"Evaluation set: {len(embedded)} clips.")

    # two signatures (public mode has no server-path inputs): Gradio passes the request to named parameters only
    def load_public(model_key, files, state_v, clip, request: gr.Request = None, progress=gr.Progress()):
        return load(model_key, files, "", "", "", state_v, clip, request, progress)

    def load_local(model_key, files, folder, csv_path, hf_path, state_v, clip, request: gr.Request = None,
                   progress=gr.Progress()):
        return load(model_key, files, folder, csv_path, hf_path, state_v, clip, request, progress)

    load_btn.click(load_local if server_inputs else load_public,
                   [ctx.model_dropdown, files_box] + server_inputs + [view.state, ctx.clip],
                   [view.eval_state] + view.score_outputs, api_name="load_evaluation_set", **ctx.groups["long"])
