"""The Descriptions tab's "Generate with an LLM" section: its controls, what Generate will do said before the
click (:func:`generator_hint`), and its events.

A generation is a long job that mostly waits for an LLM (a server's, or the local model's turn of the CPU); it
is rate-limited per visitor and cancellable. Its progress and any error show on the section's own status line
(``show_progress_on``), never as error badges on the table or the scores it fills on success.
"""
from __future__ import annotations

from contextlib import nullcontext

import gradio as gr

from .. import pacing
from ..errors import DescriptionError, DferclipError, LLMRateLimitError
from ..text.llm import LLMSettings, get_style, prompt_styles, visitor_settings
from ..text.local_llm import get_local_model, is_downloaded, local_models
from ..weights.hub import hub_reachable
from .errors import user_error
from .scheduler import BusyError
from .workbench import WorkbenchView, _rows_df, _workbench, workbench_outputs

GENERATORS = [("local model (no key needed; first use downloads it)", "local"),
              ("a server (OpenAI, vLLM, Ollama, LM Studio)", "openai")]


def _local_title(spec) -> str:
    return spec.repo_id.rpartition("/")[2].replace("-", " ")


def _cannot_write(spec) -> str:
    return (f"This server has no internet connection and does not have {_local_title(spec)}, so the local model "
            "cannot write descriptions here. Choose “a server” below and give its address (and key), or edit the "
            "descriptions in the table by hand.")


def local_model_unreachable(local_name) -> str:
    """Why the local model cannot write here (in a visitor's words), or "" when it can: it is downloaded, or
    the Hub can be reached to download it."""
    try:
        spec = get_local_model(str(local_name or "") or None)
    except DferclipError as e:
        return str(e)
    return "" if is_downloaded(spec) or hub_reachable() else _cannot_write(spec)


def generator_hint(backend, local_name) -> str:
    """What Generate will do with these choices, said before the click."""
    if backend != "local":
        return ("**Generate** sends one request per class to the server named below (or the one this app is set up "
                "with). A key you type is used for this session only and is never saved.")
    try:
        spec = get_local_model(str(local_name or "") or None)
    except DferclipError as e:
        return f"⚠ {e}"
    if is_downloaded(spec):
        return (f"**Generate** writes the descriptions with {_local_title(spec)} on this server: no key, nothing is "
                "sent elsewhere. It takes a few seconds per class.")
    if not hub_reachable():
        return f"⚠ {_cannot_write(spec)}"
    size = spec.download.split(":")[0] if spec.download else "a one-time download"
    return (f"The first **Generate** downloads {_local_title(spec)} ({size}) to this server, once; that can take a "
            "minute or two. Later generations start at once. Nothing is sent elsewhere.")


def build_generate_section(ctx, view: WorkbenchView) -> None:
    """The section's components (in the tab's layout, after the editor) and their events."""
    styles = prompt_styles()
    default_style = next(iter(styles))
    default_backend = LLMSettings.from_env().backend
    local_names = list(local_models())
    default_local = local_names[0] if local_names else None
    with gr.Accordion("Generate with an LLM (a small local model, or any OpenAI-compatible server)",
                      open=False) as section:
        with gr.Row():
            generator = gr.Radio(GENERATORS, value=default_backend, label="Generator", scale=3,
                                 elem_id="generator")
            local_model = gr.Dropdown(local_names, value=default_local, label="Local model", scale=1)
        # said when the section opens (it starts closed), so building the page probes no network
        hint = gr.Markdown(elem_id="generate-hint")
        with gr.Row():
            style = gr.Dropdown([(s.label, k) for k, s in styles.items()], value=default_style, label="Style")
            llm_model = gr.Textbox(label="LLM name", placeholder="$DFERCLIP_LLM_MODEL or gpt-4o-mini")
            base_url = gr.Textbox(label="Base URL", placeholder="$OPENAI_BASE_URL or https://api.openai.com/v1")
            api_key = gr.Textbox(label="API key (this session only; never saved)", type="password",
                                 placeholder="$OPENAI_API_KEY")
        with gr.Row():
            view.only.render()  # the classes to generate for: the editor updates its choices with the class set
            n_desc = gr.Number(value=styles[default_style].n, precision=0, label="Descriptions per class")
            mode_gen = gr.Radio(["replace", "add"], value="replace", label="Generated descriptions")
        system_prompt = gr.Textbox(value=styles[default_style].system, label="System prompt", lines=2)
        prompt = gr.Textbox(value=styles[default_style].user, lines=4,
                            label="Prompt template ({name} {article} {others} {n} {example})")
        source_md = gr.Markdown(f"_Source: {styles[default_style].source}_")
        with gr.Row():
            generate_btn = gr.Button("Generate", variant="primary")
            cancel_btn = gr.Button("Cancel generation")
        gen_status = gr.Markdown(elem_id="generate-status")  # progress and errors of a generation show here
        sent = gr.Textbox(label="Prompts sent", lines=4, interactive=False, elem_id="prompts-sent")

    def on_style(style_v):
        st = get_style(style_v)
        return st.user, st.system, st.n, f"_Source: {st.source}_"

    def generate_job(model_key, state_v, style_v, model_v, url_v, key_v, only_v, n_v, mode_v, system_v, prompt_v,
                     combine_v, clip, eval_set, backend_v="", local_v="", request: gr.Request = None,
                     progress=gr.Progress()):
        # a long job that mostly waits for an LLM server: it takes no turn of the CPU while it waits
        try:
            with ctx.scheduler.long(ctx.session(request), "generation", turn=False):
                return generate(ctx, model_key, state_v, style_v, model_v, url_v, key_v, only_v, n_v, mode_v,
                                system_v, prompt_v, combine_v, clip, eval_set, backend_v, local_v, request=request,
                                progress=progress)
        except BusyError as e:
            raise user_error(e) from None

    def cancel_generation(request: gr.Request):
        session = getattr(request, "session_hash", None) or "anonymous"
        return "Cancelling…" if ctx.cancel_generation(session) else "No generation is running."

    for changed in (section.expand, generator.change, local_model.change):
        changed(generator_hint, [generator, local_model], hint, api_visibility="private", queue=False)
    style.input(on_style, [style], [prompt, system_prompt, n_desc, source_md], api_visibility="private")
    gen_inputs = [ctx.model_dropdown, view.state, style, llm_model, base_url, api_key, view.only, n_desc, mode_gen,
                  system_prompt, prompt, view.combine, ctx.clip, view.eval_state, generator, local_model]
    generate_btn.click(generate_job, gen_inputs, [view.table, sent] + view.score_outputs,
                       api_name="generate_descriptions", show_progress_on=[gen_status], **ctx.groups["long"]
                       ).success(lambda: "", None, gen_status, api_visibility="private", queue=False)
    # not in the model queue: it must reach a generation that is running there
    cancel_btn.click(cancel_generation, None, [gen_status], api_name="cancel_generation", concurrency_id="cancel",
                     concurrency_limit=None)


def generate(ctx, model_key, state_v, style_v, model_v, url_v, key_v, only_v, n_v, mode_v, system_v, prompt_v,
             combine_v, clip, eval_set, backend_v="", local_v="", request: gr.Request = None,
             progress=gr.Progress()) -> tuple:
    """Generate descriptions for the current set's classes (or ``only_v``); (table, prompts sent) + the scoring
    outputs of the new set."""
    wb = _workbench(ctx, model_key, state_v)
    wb.combine = combine_v
    session = getattr(request, "session_hash", None) or "anonymous"
    try:
        settings = visitor_settings(str(model_v or ""), str(url_v or ""), str(key_v or ""),
                                    backend=str(backend_v or ""), local_model=str(local_v or ""),
                                    allow_private_urls=ctx.policy.allow_private_llm_urls,
                                    restrict_models=ctx.policy.public)
        if settings.backend == "local" and (unreachable := local_model_unreachable(settings.local_model)):
            raise DescriptionError(unreachable)
        try:
            n = int(float(n_v or 0)) or None
        except (TypeError, ValueError, OverflowError):
            raise DescriptionError(f"descriptions per class must be a whole number, not {str(n_v)[:40]!r}") from None
        total = len([c for c in wb.current.classes if not only_v or c in only_v])
        cancel = ctx.generation_started(session)

        def take_rate_token(i, cls):
            """One request a class, as it goes: the first is refused when over the limit, the later ones wait
            for their turn (a big class set generates, at the limit's pace). A local describer gives way to
            other visitors' work here, between classes."""
            pacing.checkpoint()
            while not cancel.is_set():
                wait = ctx.llm_limiter.take(session, 1)
                if wait is None:
                    return
                if i == 0:
                    raise LLMRateLimitError(f"too many LLM requests: this app allows "
                                            f"{ctx.policy.llm_requests_per_minute} a minute per visitor; try "
                                            f"again in {wait:.0f} s")
                progress(i / max(total, 1), desc=f"rate limit: {wait:.0f} s before asking for {cls}")
                cancel.wait(max(wait, 0.05))

        # a local describer computes here: it takes the CPU's turn like any long job; a server's answer is waited
        # for without it
        computing = ctx.scheduler.turn() if settings.backend == "local" else nullcontext()
        try:
            with computing:
                gen = wb.generate(style_v, only=only_v or None, replace=mode_v == "replace", settings=settings,
                                  template=prompt_v, system=system_v, n=n, cancel=cancel,
                                  before_request=take_rate_token,
                                  progress=lambda i, n, c: progress(i / max(n, 1), desc=f"asking for {c}"))
        finally:
            ctx.generation_ended(session, cancel)
    except DferclipError as e:
        raise user_error(e) from None
    sent_text = "\n\n".join(f"[{c}] {p}" for c, p in zip(gen.classes, gen.prompts))
    with ctx.scheduler.turn():  # scoring the new set: paced like a long re-score
        scored = workbench_outputs(wb, clip, eval_set, f"Generated with {settings.describe()}.")
    return (_rows_df(wb.current), sent_text) + scored
