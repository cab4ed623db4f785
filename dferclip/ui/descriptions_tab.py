"""The "Descriptions" tab, assembled from its sections: the editor (``ui/workbench.py``) first, then the
explanation of a descriptor, Generate, the evaluation set, set files and A vs B. Each section builds and wires
its own components; they share the editor's :class:`~dferclip.ui.workbench.WorkbenchView`."""
from __future__ import annotations

import gradio as gr

from .compare import build_compare_section
from .evaluation import build_evaluation_section
from .explain import build_explain_section
from .generate import build_generate_section
from .set_files import build_set_files_section
from .workbench import WorkbenchView, build_editor


def build_workbench_tab(ctx) -> WorkbenchView:
    """The "Descriptions" tab. Needs ``ctx.model_dropdown``, ``ctx.model(key)`` and ``ctx.clip`` (see context.py).
    Returns its components for the sections outside it (``ui/share.py``)."""
    with gr.Tab("Descriptions", id="descriptions") as tab:
        view = build_editor(ctx, tab)
        build_explain_section(ctx, "descriptor", table=view.table)
        build_generate_section(ctx, view)
        build_evaluation_section(ctx, view)
        build_set_files_section(ctx, view)
        build_compare_section(ctx, view)
    return view
