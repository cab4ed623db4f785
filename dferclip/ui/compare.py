"""Compare two description sets (A vs B) in the Descriptions tab, honestly: side by side on the current clip,
and on the evaluation set with UAR/WAR of each, B - A with a 95 % paired bootstrap interval, the exact McNemar
test, per-class recall and the clips whose prediction flips (with a thumbnail). The ``/compare_sets``
endpoint gives the same; ``describe compare`` is its command-line twin (:meth:`dferclip.workbench.Workbench.compare`).
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Optional

import gradio as gr
import numpy as np
import pandas as pd

from ..errors import DferclipError
from ..metrics import SMALL_CLASS
from .context import AppContext
from .scheduler import BusyError
from .workbench import _workbench, diff_markdown, no_learned_note, pick_set, saved_set_names, user_error

STATE_CHOICES = ["current", "baseline", "previous"]
MAX_FLIPS_SHOWN = 24  # thumbnails of flipped clips (all are listed in the API's result)
RESAMPLES = 2000


def _verdict(c) -> str:
    """One plain sentence: a difference is called real only when its interval excludes 0, McNemar agrees
    (p < 0.05) and every class has enough clips for the interval to mean something."""
    diff = c.uar_diff
    if c.small_classes:
        return "too few clips in some classes to tell a difference from noise"
    if diff.low > 0 and c.mcnemar.p < 0.05:
        return "B's UAR is higher beyond the noise of these clips"
    if diff.high < 0 and c.mcnemar.p < 0.05:
        return "B's UAR is lower beyond the noise of these clips"
    return "the difference could be noise" + (": its interval holds 0" if diff.low <= 0 <= diff.high else
                                              f" (McNemar p = {c.mcnemar.p:.2g})")


def _thumbnail(path: str, size: int = 96) -> Optional[np.ndarray]:
    """The clip's middle frame, small (a flipped clip's picture)."""
    try:
        import av

        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            frames = stream.frames or 0
            for k, frame in enumerate(container.decode(stream)):
                if k >= frames // 2:
                    image = frame.to_image()
                    image.thumbnail((size, size))
                    return np.asarray(image)
    except Exception:  # a thumbnail is decoration: the clip's name and labels still show
        return None
    return None


def compare_event(ctx: AppContext, model_key: Optional[str], a: str, b: str, state_v, own, combine_v, clip,
                  eval_set) -> tuple:
    """(summary markdown, current clip's probabilities side by side, per-class recall, flipped clips gallery,
    text diff, API result)."""
    model_key = model_key or ctx.registry.default_key
    wb = _workbench(ctx, model_key, state_v)
    wb.combine = combine_v or wb.combine
    try:
        set_a, set_b = pick_set(ctx, wb, str(a or "baseline"), own), pick_set(ctx, wb, str(b or "current"), own)
    except DferclipError as e:
        raise user_error(e) from None
    if set_a.classes != set_b.classes:
        raise user_error(f"A and B have different classes ({', '.join(set_a.classes)} / "
                         f"{', '.join(set_b.classes)}): compare sets of one class set")
    lines = [f"**A: {html.escape(a)}** ({html.escape(set_a.name)} v{set_a.version}) vs **B: {html.escape(b)}** "
             f"({html.escape(set_b.name)} v{set_b.version}), combine {wb.combine}."]
    if no_learned_note(wb.model):  # zero-shot rows only
        lines.append(f"- {no_learned_note(wb.model)}")
    result: dict = {"a": a, "b": b, "classes": list(set_a.classes), "clip": None, "evaluation": None}
    clip_table = pd.DataFrame()
    video = clip.video_for(wb.model.input_config) if clip is not None and hasattr(clip, "video_for") else None
    if video is not None:
        name = wb.add_clip(video, getattr(clip, "name", None) or Path(getattr(clip, "path", "clip")).name)
        per_set = []
        for ds in (set_a, set_b):
            wb.current = ds
            per_set.append(wb.score_clips([name])["clips"][name])
        rows = {"class": list(set_a.classes)}
        for mode in per_set[0]:
            pa, pb = np.asarray(per_set[0][mode]["probs"]), np.asarray(per_set[1][mode]["probs"])
            rows[f"{mode} A %"], rows[f"{mode} B %"] = np.round(pa, 1), np.round(pb, 1)
            rows[f"{mode} B − A"] = [f"{round(d, 1) + 0.0:+.1f}" for d in pb - pa]  # no "-0.0"
            lines.append(f"- current clip, {mode}: A says **{per_set[0][mode]['prediction']}**, B says "
                         f"**{per_set[1][mode]['prediction']}**.")
        clip_table = pd.DataFrame(rows)
        result["clip"] = {"name": name, **{m: {"a": per_set[0][m], "b": per_set[1][m]} for m in per_set[0]}}
    else:
        lines.append("- No clip yet: predict one in the Predict tab to see both sets on it.")
    recall_table, flips = pd.DataFrame(), []
    if eval_set is not None:
        wb.set_evaluation_embeddings(eval_set)
        try:
            ev = wb.compare(set_a, set_b, resamples=RESAMPLES)
        except DferclipError as e:
            raise user_error(e) from None
        recall_rows = {"class": ev["classes"]}
        api_modes = {}
        for mode, r in ev["modes"].items():
            c = r["comparison"]
            pct = f"{100 * c.confidence:.0f} %"
            lines.append(
                f"- **{mode}** on {ev['n']} labelled clips: UAR A {c.a.uar:.1f} → B {c.b.uar:.1f} "
                f"(B − A {c.uar_diff.estimate:+.1f}, {pct} interval {c.uar_diff.low:+.1f} to {c.uar_diff.high:+.1f}); "
                f"WAR A {c.a.war:.1f} → B {c.b.war:.1f} (B − A {c.war_diff.estimate:+.1f}, {c.war_diff.low:+.1f} to "
                f"{c.war_diff.high:+.1f}); McNemar p = {c.mcnemar.p:.3g} ({c.mcnemar.a_only} clips right only "
                f"under A, {c.mcnemar.b_only} only under B). In words: {_verdict(c)}.")
            recall_rows[f"{mode} A"] = [None if x != x else round(x, 1) for x in c.a.recall]
            recall_rows[f"{mode} B"] = [None if x != x else round(x, 1) for x in c.b.recall]
            if c.small_classes:
                lines.append(f"  ⚠ fewer than {SMALL_CLASS} clips in "
                             f"{', '.join(ev['classes'][k] for k in c.small_classes)}: the intervals cannot show "
                             "how uncertain those classes are.")
            for f in r["flipped"][: MAX_FLIPS_SHOWN - len(flips)]:
                caption = (f"{mode}: {Path(f['path']).name} · label {f['label']} · A {f['a']} → B {f['b']}")
                flips.append((_thumbnail(f["path"]), caption))
            api_modes[mode] = {**c.to_dict(ev["classes"]), "flipped": r["flipped"]}
        if not any(r["flipped"] for r in ev["modes"].values()):
            lines.append("- No clip of the evaluation set changes its prediction between A and B.")
        recall_table = pd.DataFrame(recall_rows)
        result["evaluation"] = {"n": ev["n"], "modes": api_modes}
        lines.append(f"Intervals: {RESAMPLES} resamples of the clips within each class (seed 0), so the same "
                     "comparison gives the same interval.")
    else:
        lines.append("- Load an evaluation set (above) for UAR/WAR of both sets with intervals and the clips "
                     "whose prediction flips.")
    diff_md = diff_markdown(set_a, set_b, f"A ({a})", f"B ({b})", same="No text differs between A and B.")
    gallery = [(img, cap) for img, cap in flips if img is not None]
    return "\n".join(lines), clip_table, recall_table, gallery, diff_md, result


def build_compare_section(ctx: AppContext, view) -> None:
    """The "Compare two sets" accordion, last in the Descriptions tab, and its ``/compare_sets`` endpoint.
    ``view``: the tab's shared components (``ui.workbench.WorkbenchView``)."""
    names = STATE_CHOICES + saved_set_names(ctx, None)
    with gr.Accordion("Compare two sets (A vs B)", open=False, elem_id="compare-section"):
        with gr.Row():
            # custom values pass: the visitor's own saved sets join the choices per session, and
            # load_named_set checks every name (public: shipped sets and this session's own only)
            a = gr.Dropdown(names, value="baseline", label="A", allow_custom_value=True, elem_id="compare-a")
            b = gr.Dropdown(names, value="current", label="B", allow_custom_value=True, elem_id="compare-b")
            go = gr.Button("Compare", variant="primary", elem_id="compare-button", scale=0, min_width=120)
        summary = gr.Markdown(elem_id="compare-summary")
        clip_table = gr.Dataframe(label="Current clip: probabilities (%) under A and B", interactive=False,
                                  elem_id="compare-clip")
        recall = gr.Dataframe(label="Per-class recall (%) on the evaluation set", interactive=False,
                              elem_id="compare-recall")
        flips = gr.Gallery(label="Clips whose prediction flips", columns=4, height="auto", object_fit="contain",
                           elem_id="compare-flips")
        diff_md = gr.Markdown(elem_id="compare-diff")
        result = gr.JSON(visible=False)

    def compare(model_key, a_v, b_v, state_v, own, combine_v, clip, eval_set, request: gr.Request = None):
        try:
            with ctx.scheduler.long(ctx.session(request), "comparison"):
                return compare_event(ctx, model_key, a_v, b_v, state_v, own, combine_v, clip, eval_set)
        except BusyError as e:
            raise user_error(e) from None

    def refresh(own):  # the visitor's saved sets join the choices
        choices = STATE_CHOICES + saved_set_names(ctx, own)
        return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)

    go.click(compare, [ctx.model_dropdown, a, b, view.state, view.own_sets, view.combine, ctx.clip,
                       view.eval_state], [summary, clip_table, recall, flips, diff_md, result],
             api_name="compare_sets", **ctx.groups["long"])
    view.own_sets.change(refresh, view.own_sets, [a, b], api_visibility="private", queue=False)
