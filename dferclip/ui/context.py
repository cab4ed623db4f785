"""The app's shared context: which models exist, which one a page has selected, and the page's current clip.

Tabs receive one :class:`AppContext` and wire their events to the components it holds::

    ctx = AppContext(ModelRegistry.discover())        # app-wide, built once
    with gr.Blocks() as demo:
        build_model_bar(ctx)                          # fills ctx.model_dropdown and ctx.banner
        ctx.clip = gr.State(None)                     # (done by build_model_bar)
        build_predict_tab(ctx)
        build_workbench_tab(ctx)

For a tab's event functions:

- ``ctx.model_dropdown``: a ``gr.Dropdown`` whose value is a registry key (a ``load_model`` source). Use it as an
  input; ``ctx.model(key)`` returns the loaded model (lazily loaded, shared by all users, at most
  ``registry.max_loaded`` in memory). It raises ``DferclipError`` subclasses with a plain message (e.g. zero-shot
  CLIP offline); turn them into ``gr.Error``. Loaded models are in eval mode on ``ctx.registry.device``; run them
  under ``dferclip.runtime.inference(ctx.registry.device)`` for the app's precision.
- ``ctx.clip``: a per-page ``gr.State`` holding the last predicted :class:`ClipRecord` or None. The predict tab
  writes it (as the face the visitor picked, when the clip has several: ``record.faces``); other tabs read it (its ``video`` is the model-input tensor, so a tab can embed the clip again with
  another model or other descriptions without decoding the file again).
- ``ctx.groups``: the queue each event joins, ``**ctx.groups["predict" | "quick" | "long"]``: predicts, quick
  calls (re-scores of small edits, model switches) and long jobs (explanations, evaluation sets, generation)
  each have a queue of their own, so none waits behind another's. Inside the event, run the work under
  ``ctx.scheduler.quick()`` or ``ctx.scheduler.long(ctx.session(request), what)`` (:mod:`.scheduler`), which
  decides how they share the CPU.
- ``ctx.banner``: the ``gr.HTML`` stating what weights run; ``ctx.banner_text(key)`` renders it.
- ``ctx.model_selected``: the event of a successful model switch; chain on it to follow the selection, e.g.
  ``ctx.model_selected.success(fn, [ctx.model_dropdown, ...], [...])`` (the dropdown then holds the new key).
"""
from __future__ import annotations

import contextvars
import dataclasses
import html
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import gradio as gr
import numpy as np
import torch

from ..errors import DferclipError
from ..runtime import ModelRegistry, download_text, dtype_name, request_weights, weights_banner
from ..weights import fetch, published
from .policy import Policy, RateLimiter
from .scheduler import Scheduler


@dataclass
class ClipRecord:
    """The page's current clip, as the predict tab saw it."""

    path: str
    model_key: str  # the model that predicted it
    ingest: Any  # dferclip.ingest.IngestResult (video, crops, frames, face_found, warnings, timings)
    prediction: Any  # dferclip.predict.Prediction (probabilities, timeline, video_embedding, timings)
    faces: tuple = ()  # every face's Prediction, the main face first (kept as ``prediction`` is); () before known
    face: int = 0  # the picked face: ``prediction`` is ``faces[face]``

    @classmethod
    def of_faces(cls, path: str, model_key: str, preds, face: int = 0) -> "ClipRecord":
        """The record of a clip with one prediction per face, showing ``preds[face]``. Each face keeps its crops
        and not its model-input tensor, which is the same pixels (:attr:`video`), so a session holding six faces
        holds about what one clip's crops and tensor take."""
        faces = tuple(_without_video(cls.of_prediction(path, model_key, p).prediction) for p in preds)
        return cls(path=path, model_key=model_key, ingest=faces[face].ingest, prediction=faces[face], faces=faces,
                   face=face)

    @property
    def name(self) -> str:
        """The clip's file name, with the face shown when it has several ("clip.mp4 · face 2")."""
        name = Path(self.path).name
        return f"{name} · face {self.face + 1}" if len(self.faces) > 1 else name

    def pick(self, face: int) -> "ClipRecord":
        """The same clip showing its face ``face`` (an index into ``faces``)."""
        pred = self.faces[face]
        return dataclasses.replace(self, ingest=pred.ingest, prediction=pred, face=face)

    @classmethod
    def of_prediction(cls, path: str, model_key: str, pred) -> "ClipRecord":
        """What a visitor's session keeps of a prediction: all but the sliding windows' model input (W x T frames,
        tens of MB at 224 px, used up once the timeline is drawn), so a session holds one clip's frames."""
        ingest = pred.ingest
        windows = getattr(ingest, "windows", None)
        if windows is not None and windows.video.numel():
            empty = torch.empty((0, *windows.video.shape[1:]), dtype=windows.video.dtype)  # not a view: frees them
            ingest = dataclasses.replace(ingest, windows=dataclasses.replace(windows, video=empty))
            pred = dataclasses.replace(pred, ingest=ingest)
        return cls(path=path, model_key=model_key, ingest=ingest, prediction=pred)

    @property
    def video(self) -> torch.Tensor:
        """The model-input tensor (1, T, 3, S, S) of ``model_key``'s input config."""
        video = self.ingest.video
        return _video_of_crops(self.ingest) if video.shape[1] == 0 else video

    def video_for(self, input_config) -> Optional[torch.Tensor]:
        """The clip as input for a model with ``input_config``: the same tensor, re-normalised when only the
        normalisation differs (DFER-CLIP takes [0, 1] pixels, FineCLIPER CLIP's mean/std), None when the
        frame size or count differs (the clip must be ingested again)."""
        own = getattr(self.ingest, "input_config", None)
        video = self.video
        if own is None or own == input_config:
            return video if video.shape[-1] == input_config.image_size else None
        if dataclasses.replace(own, mean=input_config.mean, std=input_config.std) != input_config:
            return None  # other frames or another size: not a matter of normalisation
        return input_config.normalize(own.denormalize(video))


def _video_of_crops(ingest) -> torch.Tensor:
    """The model input made from the crops' pixels, by the operations ingestion used (so the very same tensor)."""
    pixels = torch.from_numpy(np.stack([np.asarray(crop) for crop in ingest.crops])).permute(0, 3, 1, 2)
    return ingest.input_config.normalize(pixels.float().div_(255.0)).unsqueeze(0)


def _without_video(pred):
    """``pred`` without its clip's model-input tensor where its crops give it back exactly."""
    ingest = pred.ingest
    video = ingest.video
    if video.shape[1] == 0 or not ingest.crops or not torch.equal(_video_of_crops(ingest), video):
        return pred
    empty = torch.empty((1, 0, *video.shape[2:]), dtype=video.dtype)
    return dataclasses.replace(pred, ingest=dataclasses.replace(ingest, video=empty))


class AppContext:
    def __init__(self, registry: ModelRegistry, policy: Optional[Policy] = None):
        self.registry = registry
        registry.start_slots()  # GPU functions find the models by key (ZeroGPU: loaded on CUDA at start-up)
        self.policy = policy or Policy()
        self.llm_limiter = RateLimiter(self.policy.llm_requests_per_minute, self.policy.llm_requests_per_minute_total)
        self._generations: dict[str, "threading.Event"] = {}  # session -> the cancel flag of its running generation
        self._generations_lock = threading.Lock()
        self.scheduler = Scheduler()
        # one predict at a time on a CPU (it uses every core); quick and long calls may overlap it, and the
        # scheduler keeps long ones to one piece at a time, behind quick work
        predicts = 1 if registry.device.type == "cpu" else 2
        self.groups = {"predict": {"concurrency_id": "predict", "concurrency_limit": predicts},
                       "quick": {"concurrency_id": "quick", "concurrency_limit": 4},
                       "long": {"concurrency_id": "long", "concurrency_limit": 4}}
        self.concurrency_id, self.concurrency_limit = "predict", predicts
        self.model_dropdown: Optional[gr.Dropdown] = None
        self.banner: Optional[gr.HTML] = None
        self.clip: Optional[gr.State] = None
        self.last_good: Optional[gr.State] = None  # the last model that loaded (the model bar's)
        self.model_selected = None

    def close(self, timeout: float | None = None) -> bool:
        """When the app stops: stop and join the registry's background conversions (True when none is left)."""
        return self.registry.close(timeout)

    @staticmethod
    def session(request) -> str:
        """The visitor's session (a browser tab, or one gradio_client): the key of per-visitor bounds."""
        return getattr(request, "session_hash", None) or "anonymous"

    # --- one LLM generation per session, cancellable from another request ----------------------------------
    def generation_started(self, session: str) -> "threading.Event":
        event = threading.Event()
        with self._generations_lock:
            self._generations[session] = event
        return event

    def generation_ended(self, session: str, event: "threading.Event") -> None:
        with self._generations_lock:
            if self._generations.get(session) is event:
                del self._generations[session]

    def cancel_generation(self, session: str) -> bool:
        with self._generations_lock:
            event = self._generations.get(session)
        if event is not None:
            event.set()
        return event is not None

    def model_for_event(self, key: Optional[str] = None) -> torch.nn.Module:
        """:meth:`model` for an event function: a model that cannot be had is a message to the visitor."""
        try:
            return self.registry.get(key or self.registry.default_key)
        except DferclipError as e:
            raise gr.Error(str(e), print_exception=False) from None

    def model(self, key: Optional[str] = None) -> torch.nn.Module:
        return self.registry.get(key)

    def banner_text(self, key: Optional[str] = None) -> str:
        """HTML saying what weights run (loads the model); untrained weights get a visible warning."""
        model = self.registry.get(key)
        what, warning = weights_banner(model.weights_info)
        run = f"{self.registry.device.type} {dtype_name(self.registry.dtype)}"
        classes = ", ".join(model.class_names)
        text = (f"<b>Weights:</b> {html.escape(what)} &middot; <b>runs on</b> {run} &middot; "
                f"<b>{model.num_classes} classes:</b> {html.escape(classes)}")
        if warning:
            return f'<div class="weights-banner untrained">&#9888; <b>{html.escape(warning)}</b><br>{text}</div>'
        return f'<div class="weights-banner trained">{text}</div>'


# --- the model bar (dropdown + banner), shared by all tabs -------------------------------------------
def select_model(ctx: AppContext, key: str, last_good: str) -> tuple[str, str, str]:
    """Load ``key``; returns (dropdown value, banner, last good key). On failure, warn and keep the previous one.
    Published weights not on the server yet are never fetched here: their download starts in the background
    (when allowed) and the previous model stays, with a banner saying so (:func:`pending_download`)."""
    try:
        reason = ctx.registry.unavailable(key)
        if reason:
            raise DferclipError(reason)
        st = request_weights(key, public=ctx.policy.public)
        if st is not None and st.state in ("refused", "failed"):
            raise DferclipError(st.error or st.text)
        if st is not None:
            gr.Info(f"{ctx.registry.entry(key).label}: downloading in the background; the banner says when it "
                    "is ready. Until then the current model stays.")
            return last_good, downloading_banner(key), last_good
        ctx.model(key)
    except DferclipError as e:
        kept = ctx.registry.entry(last_good).label if key != last_good else "the previous model"
        gr.Warning(f"Cannot load {ctx.registry.entry(key).label}: {e}. Still using {kept}.")
        return last_good, ctx.banner_text(last_good), last_good
    return key, ctx.banner_text(key), key


LOADING_TICK_S = 0.5  # how often the banner of a loading model is redrawn


def needs_loading(ctx: AppContext, key) -> bool:
    """Whether picking ``key`` loads a model into memory here (not one loaded already, nor one that must be
    downloaded first or cannot be had: those are answered at once)."""
    try:
        ctx.registry.entry(key)
    except DferclipError:
        return False
    entry = published.get_entry(key) if isinstance(key, str) else None
    return (not ctx.registry.is_loaded(key) and not ctx.registry.unavailable(key)
            and (entry is None or published.is_cached(entry)))


def loading_banner(ctx: AppContext, key: str, kept: str, seconds: float) -> str:
    """The banner while ``key`` loads: what, how long so far, and what runs meanwhile."""
    label = html.escape(ctx.registry.entry(key).label)
    meanwhile = (f"Until it is ready, {html.escape(ctx.registry.entry(kept).label)} stays in use and the page "
                 "works as before; the list shows it again until then." if kept != key else "")
    return (f'<div class="weights-banner untrained loading" id="model-loading">&#8987; <b>Loading {label}</b> '
            f"(step 1 of 2: building the model and reading its weights, the first time it is used on this "
            f"server) &middot; {seconds:.0f} s so far. Step 2 scores the current descriptions with it. "
            f"{meanwhile}</div>")


def selected(key: str, value: str, banner: str, good: str) -> tuple:
    """The model bar's outputs once a pick is answered: loaded (no download to follow), downloading (the timer
    follows it) or refused (it keeps following an earlier pick's download)."""
    if value == key:
        return value, banner, good, None
    return value, banner, good, key if fetch.in_progress(key) else gr.skip()


def load_with_progress(ctx: AppContext, key: str, good: str):
    """Load ``key`` in a thread of its own and redraw the banner while it loads; the previous model stays
    selected meanwhile, so the page's other events keep running with it instead of waiting for the load."""
    answer: dict = {}
    run = contextvars.copy_context().run  # gr.Warning and gr.Info reach this visitor from the thread too

    def load():
        try:
            with ctx.scheduler.quick():
                answer["out"] = run(select_model, ctx, key, good)
        except BaseException as e:  # given back to the event below
            answer["error"] = e

    worker = threading.Thread(target=load, name=f"load {key}"[:60], daemon=True)
    start = time.monotonic()
    worker.start()
    while worker.is_alive():
        yield good, loading_banner(ctx, key, good, time.monotonic() - start), good, gr.skip()
        worker.join(LOADING_TICK_S)
    if "error" in answer:
        raise answer["error"]
    yield selected(key, *answer["out"])


def build_model_bar(ctx: AppContext) -> None:
    """The model dropdown and the weights banner; sets ``ctx.model_dropdown``, ``ctx.banner``, ``ctx.clip``."""
    default = ctx.registry.default_key
    with gr.Row(equal_height=True, elem_id="model-bar"):
        ctx.model_dropdown = gr.Dropdown(ctx.registry.choices(), value=default, label="Model", scale=2,
                                         info="the banner says which weights run; other models load when picked")
        ctx.banner = gr.HTML(initial_banner(ctx, default), elem_id="weights-banner")
    last_good = gr.State(default)
    ctx.last_good = last_good
    ctx.clip = gr.State(None)
    pending, timer = watch_download(ctx, default, last_good)

    # .select, not .input: Gradio 6.31's dropdown sends "input" twice per pick (its option and its blur handler)
    def select(key, good):
        if needs_loading(ctx, key):  # a model not in memory yet: say what loads while it does
            yield from load_with_progress(ctx, key, good)
            return
        with ctx.scheduler.quick():
            value, banner, good = select_model(ctx, key, good)
        yield selected(key, value, banner, good)

    # the banner says what happens; no overlay hides it or the list
    ctx.model_selected = ctx.model_dropdown.select(
        select, [ctx.model_dropdown, last_good], [ctx.model_dropdown, ctx.banner, last_good, pending],
        api_name="select_model", show_progress="hidden", **ctx.groups["quick"])
    ctx.model_selected.then(lambda key: gr.Timer(active=key is not None), pending, timer, api_visibility="private",
                            queue=False)


# --- published weights downloading in the background (the page starts at once) -----------------------
def initial_banner(ctx: AppContext, key: str) -> str:
    """The banner for the page's first model; published weights not yet cached start downloading now."""
    st = request_weights(key, public=ctx.policy.public)
    if st is None:
        return ctx.banner_text(key)
    if st.state in ("refused", "failed"):
        return (f'<div class="weights-banner untrained">&#9888; <b>Could not get {html.escape(key)}:</b> '
                f"{html.escape(st.error or st.text)}</div>")
    return downloading_banner(key)


def downloading_banner(key: str) -> str:
    entry = published.get_entry(key)
    return ('<div class="weights-banner untrained downloading">&#8987; <b>Downloading the weights</b> (first start '
            f"only): {html.escape(download_text(key) or key)}. The page switches to them when they are ready; "
            "until then, pick another model.<br>"
            f"{html.escape(weights_banner(entry.facts())[0])}</div>")


def download_progress(ctx: AppContext, key: Optional[str], value: str, last_good: str):
    """Timer tick: progress while ``key`` (the page's first model, or one the visitor picked) downloads, then
    its banner. The first model is switched to when ready; a picked one is announced (picking it again loads
    it, so the other tabs follow). A failed download says why and keeps (or finds) a model that loads."""
    if not key:
        return gr.skip(), gr.skip(), last_good, gr.Timer(active=False)
    if fetch.in_progress(key):
        return downloading_banner(key), gr.skip(), last_good, gr.Timer(active=True)
    st = fetch.status(key)
    choices = ctx.registry.choices()
    if key != value and (st is None or st.state == "ready"):  # picked while another model ran: say it is here
        label = html.escape(ctx.registry.entry(key).label)
        return (f'<div class="weights-banner trained">&#10003; <b>{label} is ready:</b> pick it in the list to use '
                f"it.</div>" + ctx.banner_text(value), gr.Dropdown(choices=choices), last_good,
                gr.Timer(active=False))
    if st is None or st.state == "ready":
        try:
            return ctx.banner_text(key), gr.Dropdown(choices=choices, value=key), key, gr.Timer(active=False)
        except DferclipError as e:
            st = fetch.DownloadStatus(key, "failed", error=str(e))
    note = (f'<div class="weights-banner untrained">&#9888; <b>Could not get {html.escape(key)}:</b> '
            f"{html.escape(st.error or st.state)}</div>")
    if key != value:
        return note + ctx.banner_text(value), gr.Dropdown(choices=choices), last_good, gr.Timer(active=False)
    for fallback in [e.key for e in ctx.registry.entries if e.origin != "published"]:  # "random" always loads
        try:
            banner = ctx.banner_text(fallback)
        except DferclipError:
            continue
        return note + banner, gr.Dropdown(choices=choices, value=fallback), fallback, gr.Timer(active=False)
    return note, gr.Dropdown(choices=choices), last_good, gr.Timer(active=False)


def watch_download(ctx: AppContext, key: str, last_good):
    """A timer (api ``/weights_status``) that follows the download of the page's first model ``key``, or of
    one the visitor picks; returns (the key it follows, a State; the timer)."""
    first = key if fetch.in_progress(key) or fetch.status(key) is not None else None
    pending = gr.State(first)
    timer = gr.Timer(1.0, active=first is not None)
    timer.tick(lambda k, value, good: download_progress(ctx, k, value, good), [pending, ctx.model_dropdown, last_good],
               [ctx.banner, ctx.model_dropdown, last_good, timer], api_name="weights_status", queue=False,
               show_progress="hidden")
    return pending, timer
