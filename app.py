"""dferclip Space: dynamic facial expression recognition from video with CLIP.

    python app.py [--model SRC] [--host 0.0.0.0] [--port 7860] [--mode public|local]

The UI only: models, video and scoring live in the ``dferclip`` library. Which weights run is decided by
``dferclip.runtime`` (``--model`` / ``DFERCLIP_MODEL``, then ``checkpoints/``, ``DFERCLIP_HUB_REPO``, then the
untrained offline default, which the page says in a banner). Public or local mode (docs/security.md):
``--mode``/``DFERCLIP_MODE``, else public on a Space or when bound to a non-loopback address.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys

if os.environ.get("SPACES_ZERO_GPU"):  # ZeroGPU: spaces patches torch before anything touches CUDA
    import spaces  # noqa: F401

import gradio as gr

from dferclip import logs
from dferclip.runtime import ModelRegistry
from dferclip.ui.context import AppContext, build_model_bar
from dferclip.ui.live import build_live_tab
from dferclip.ui.policy import Policy
from dferclip.ui.compare_models import build_compare_models_section
from dferclip.ui.predict import MAX_UPLOAD, build_predict_tab

try:
    from dferclip.ui.share import ShareParts, build_share_section
    from dferclip.ui.descriptions_tab import build_workbench_tab
except ImportError:  # the workbench tab is optional
    build_workbench_tab = None

TITLE = "dferclip: facial expressions in video with CLIP"
INTRO = """
# dferclip: facial expressions in video, with CLIP
Upload a short clip or record one with your webcam, then **Predict expression**.
<span class="intro-more">The app finds every face (the main one first), samples 16 frames of each as
[DFER-CLIP](https://github.com/zengqunzhao/DFER-CLIP) does, and scores them against text descriptions of each
expression. **Live** reads the expression from your webcam as you go. The **Descriptions** tab lets you
edit those descriptions and see how the scores move.</span>
"""
CSS = """
.weights-banner {padding: 0.6em 0.9em; border-radius: 8px; font-size: 0.92em; line-height: 1.45;}
.weights-banner.untrained {background: #fff4e5; border: 1px solid #f0a040; color: #5c3300;}
.weights-banner.trained {background: #eaf7ee; border: 1px solid #62b37a; color: #123d20;}
.dark .weights-banner.untrained {background: #3d2a10; color: #ffdcae;}
.dark .weights-banner.trained {background: #12301d; color: #c8f0d4;}
.hint {opacity: 0.8; font-size: 0.9em;}
#predict-note {min-height: 4em;}
footer {opacity: 0.85;}
/* tables: numbers stay visible, headers break between words only; narrow screens scroll sideways */
#workbench-contributions th, #workbench-scores th, #workbench-metrics th {word-break: normal; overflow-wrap: normal;
  hyphens: none;}
#descriptions-table td, #descriptions-table th {word-break: normal; overflow-wrap: normal;}
#workbench-scores table {min-width: 560px;}
#workbench-charts {flex-wrap: wrap;}
#workbench-charts > * {flex: 1 1 320px !important;}
/* label titles in the flow, above the top class, however many lines they take (not floating over it) */
#expression-label > label[data-testid="block-label"], #live-label > label[data-testid="block-label"],
#live-view > label[data-testid="block-label"], #face-picker > label[data-testid="block-label"] {
  position: static; width: fit-content; margin-bottom: var(--spacing-md);}
/* face thumbnails: small tiles, each caption in full under its face, the picked face outlined */
#face-picker, #face-picker .grid-wrap {height: auto !important; min-height: 0 !important; max-height: none !important;
  overflow: visible;}
#face-picker .grid-container {grid-template-columns: repeat(auto-fill, minmax(120px, 1fr)) !important;
  grid-template-rows: none !important; grid-auto-rows: auto !important; padding-top: 0;}
#face-picker .thumbnail-item {aspect-ratio: auto; height: auto; display: flex; flex-direction: column;}
#face-picker .thumbnail-item > img {aspect-ratio: 1; height: auto;}
#face-picker .caption-label {position: static; max-width: none; white-space: normal; border: 0; border-radius: 0;
  text-align: center; line-height: 1.3; opacity: 1;}
#face-picker .thumbnail-item.selected {outline: 3px solid var(--color-accent); outline-offset: 1px;}
/* a dropdown's text stops before its caret */
input[role="combobox"]:has(+ .icon-wrap) {padding-right: 28px; text-overflow: ellipsis;}
/* phones (about 400 px): stack the model bar, a compact intro, charts and legends that fit */
@media (max-width: 640px) {
  #app-intro h1 {font-size: 1.35em; margin-bottom: 0.2em;}
  #app-intro p {font-size: 0.9em; line-height: 1.35;}
  #app-intro .intro-more {display: none;}
  #model-bar {flex-direction: column; gap: 0.5em;}
  #model-bar > * {width: 100% !important; min-width: 0 !important; flex: 1 1 auto !important;}
  .weights-banner {font-size: 0.85em; overflow-wrap: anywhere;}
  #workbench-actions {flex-wrap: wrap;}
  #workbench-actions > * {flex: 1 1 45% !important; min-width: 140px !important;}
  /* frame galleries: 4 columns in time order, all rows shown, nothing scrolls sideways */
  #face-crops .grid-container, #stream-renders .grid-container, .explain-maps .grid-container {
    grid-template-columns: repeat(4, minmax(0, 1fr)) !important;}
  #face-crops, #stream-renders, .explain-maps, #face-crops .grid-wrap, #stream-renders .grid-wrap,
  .explain-maps .grid-wrap {height: auto !important; max-height: none !important; overflow-x: hidden;}
}
"""
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="pink")


def build_demo(model: str | None = None, host: str | None = None, mode: str | None = None) -> gr.Blocks:
    """The app. Loads the first model on offer (to say truthfully what runs); others load on selection.
    ``host``/``mode`` decide public or local mode (:mod:`dferclip.ui.policy`)."""
    policy = Policy.from_env(host, mode)
    logging.getLogger(__name__).info("app mode: %s", policy.mode)
    ctx = AppContext(ModelRegistry.discover(model, public=policy.public), policy)
    age = policy.upload_max_age_s  # Gradio deletes uploads (and files it served) older than this
    with gr.Blocks(title=TITLE, delete_cache=(max(1, min(600, age // 4)), age) if age > 0 else None) as demo:
        gr.Markdown(INTRO, elem_id="app-intro")
        build_model_bar(ctx)
        with gr.Tabs() as tabs:
            video, predict_outputs = build_predict_tab(ctx, sections=[build_compare_models_section])
            build_live_tab(ctx)
            workbench = build_workbench_tab(ctx) if build_workbench_tab is not None else None
        if workbench is not None:  # the workbench's state by link (restored when a page opens with one)
            build_share_section(ctx, demo, ShareParts(tabs, video, predict_outputs, workbench.table,
                                                      workbench.combine, workbench.class_set,
                                                      workbench.score_outputs), workbench.tab)
    demo.queue(max_size=policy.queue_size, default_concurrency_limit=ctx.groups["predict"]["concurrency_limit"])
    demo.ctx = ctx
    return demo


def launch_kwargs(demo: gr.Blocks) -> dict:
    """Arguments for ``demo.launch`` that belong to the app (Gradio 6: theme and css go here), including the
    number of visitors' sessions kept in memory (each holds its clip; the least recently used go first)."""
    return {"theme": THEME, "css": CSS, "max_file_size": MAX_UPLOAD, "footer_links": ["api", "gradio", "settings"],
            "state_session_capacity": demo.ctx.policy.max_sessions}


def parse_args(argv=None) -> argparse.Namespace:
    on_space = bool(os.environ.get("SPACE_ID"))
    parser = argparse.ArgumentParser(description="dferclip Gradio app")
    parser.add_argument("--model", default=None, help="weights to run first (overrides DFERCLIP_MODEL)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if on_space else "127.0.0.1"))
    parser.add_argument("--mode", choices=["public", "local"], default=None,
                        help="public: visitors are strangers (default on a Space or a non-loopback host)")
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860))
    return parser.parse_args(argv)


NO_DEPS_PACKAGES = {"facenet_pytorch": "facenet-pytorch==2.6.0", "mediapipe": "mediapipe==0.10.21"}


def ensure_no_deps_packages() -> None:
    """On a Space, install facenet-pytorch (MTCNN weights) and mediapipe (FineCLIPER's face mesh) without
    their dependencies, whose pins (torch<2.3, numpy<2) requirements.txt cannot override."""
    missing = [pkg for module, pkg in NO_DEPS_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if os.environ.get("SPACE_ID") and missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *missing], check=False)
        importlib.invalidate_caches()


if __name__ == "__main__":
    logs.configure(logging.INFO)
    ARGS = parse_args()
    ensure_no_deps_packages()
    demo = build_demo(ARGS.model, ARGS.host, ARGS.mode)
    try:
        demo.launch(server_name=ARGS.host, server_port=ARGS.port, **launch_kwargs(demo))
    finally:  # a backend conversion still running stops at its next step; wait for that, not for its end
        demo.ctx.close()
else:
    _demo = None  # imported (``gradio app.py``, tests): built on first use of ``app.demo``, not on import

    def __getattr__(name: str):
        global _demo
        if name != "demo":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        if _demo is None:
            _demo = build_demo(host=os.environ.get("GRADIO_SERVER_NAME"))
        return _demo
