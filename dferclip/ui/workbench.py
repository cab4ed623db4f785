"""The "Descriptions" tab: edit, generate and compare class descriptions with instant re-scoring.

Per page, the tab keeps plain data in ``gr.State`` (the baseline / previous / current description sets, the
evaluation set's embeddings, and in public mode the visitor's saved sets); models and the bounded text/video
embedding caches are shared app-wide (read-only models; caches keyed by everything that changes a value), so
an edit re-encodes only the changed descriptions and re-scores cached clip embeddings.

What a visitor can send is bounded by :class:`dferclip.ui.policy.Policy` (docs/security.md): set names are
names, never paths; shipped sets are read-only; in public mode nothing is read from or written to the server's
disk on a visitor's word, and LLM requests are rate-limited per visitor and in total.

For a model with positive and negative descriptors (FineCLIPER) the tab also shows the first clip's positive
(green) and negative (red) descriptor cosines per class, the paper's Fig. 3 view, with a note on how they make
the logit; for DFER-CLIP models that plot and note are hidden. The event functions that score
(:func:`start_event`, :func:`rescore_event`) are module-level so that tests can call them directly.
"""
from __future__ import annotations

import csv
import html
import logging
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Iterator, Optional

import gradio as gr
import numpy as np
import pandas as pd

from ..errors import DataError, DescriptionError, DferclipError
from ..files import prune_folders, write_json
from ..scoring import (
    COMBINE_MODES,
    TextEmbeddingCache,
    VideoEmbeddingCache,
    has_pn_descriptors,
)
from ..text.descriptions import (
    DescriptionSet,
    diff_description_sets,
    list_description_sets,
    load_description_set,
    shipped_names,
    validate_name,
)
from .charts import CHART_CSS, Bar, bar_chart_html
from .errors import user_error
from ..labelled import LabelledClip, read_hf_dataset, read_labels_csv, read_uploaded_labels
from ..workbench import (
    Workbench,
    class_set_choices,
    descriptions_to_rows,
    rows_to_descriptions,
    same_text_as,
    starting_set,
)
from .scheduler import BusyError

log = logging.getLogger(__name__)

HEADERS = ["class", "description"]
MODE_LABELS = {"zero-shot": "zero-shot (CLIP towers)", "learned": "learned prompts (DFER-CLIP contexts)"}
PN_LEARNED_LABEL = "learned (FineCLIPER positive/negative adapters)"
FAMILY_NAMES = {"dferclip": "DFER-CLIP", "fineclipper": "FineCLIPER", "emoclip": "EmoCLIP"}
VERSION_COLORS = {"current": "#4f46e5", "baseline": "#f0a040"}
CONTRIBUTION_WIDTHS = ["96px", "112px", "auto", "112px", "120px"]  # fixed: a phone scrolls the table sideways
PN_TITLE = "positive vs negative descriptors (current clip, learned)"
PN_COLORS = {"positive": "rgb(0, 128, 0)", "negative": "rgb(255, 0, 0)"}


class _LatestEdits:
    """Each session's last table edit sent for scoring: a second input event for the same edit (the table fires
    one for the edit and one as the cell closes) is dropped, even while the first is still scoring."""

    def __init__(self, size: int = 2000):
        self._last: "OrderedDict[str, tuple]" = OrderedDict()
        self._lock = threading.Lock()
        self.size = size

    def first(self, session: str, model_key, rows, combine) -> bool:
        key = (str(model_key), repr(_rows(rows)), str(combine))
        with self._lock:
            if self._last.get(session) == key:
                return False
            self._last[session] = key
            self._last.move_to_end(session)
            while len(self._last) > self.size:
                self._last.popitem(last=False)
            return True


_LATEST_EDIT = _LatestEdits()


class _Shared:
    """App-wide caches (bounded), shared by all pages: embeddings depend only on model and text/clip."""

    text_cache = TextEmbeddingCache(maxsize=50_000)
    video_cache = VideoEmbeddingCache(maxsize=512)
    eval_caches: dict = {}  # folder -> the bounded on-disk cache of evaluation-set embeddings


def _eval_cache(ctx) -> VideoEmbeddingCache:
    from ..files import cache_dir

    folder = cache_dir() / "embeddings"
    if folder not in _Shared.eval_caches:
        _Shared.eval_caches[folder] = VideoEmbeddingCache(maxsize=4096, folder=folder,
                                                          max_bytes=ctx.policy.embedding_cache_bytes)
    return _Shared.eval_caches[folder]


# --- description sets by name: shipped ones, and the visitor's own ----------------------------------
def validated_save_name(name) -> str:
    """A name a set may be saved under (DescriptionError: not a valid name, or a shipped set's)."""
    validate_name(str(name or ""))
    if name in shipped_names():
        raise DescriptionError(f"{name!r} is a shipped set's name and cannot be saved over; pick another name")
    return name


def check_save_name(name):
    """The Save button's first step: a bad name is said on the save message alone."""
    try:
        validated_save_name(name)
    except DferclipError as e:
        raise user_error(e) from None
    return gr.skip()


def pick_set(ctx, wb: Workbench, which: str, own: Optional[dict]) -> DescriptionSet:
    """One of the workbench's versions (current, baseline, previous) or a set by name (:func:`load_named_set`)."""
    if which in ("current", "baseline", "previous"):
        return getattr(wb, which)
    return load_named_set(ctx, which, own)


def diff_markdown(a: DescriptionSet, b: DescriptionSet, a_label: str, b_label: str, same: str = "") -> str:
    """What changed from ``a`` to ``b``, class by class, as Markdown (texts shown as written); ``same``: what
    to say when nothing did."""
    rows = diff_description_sets(a, b)
    if not rows:
        return same or f"No differences between {a_label} and {b_label}."
    return f"Changes from **{html.escape(a_label)}** to **{html.escape(b_label)}**:\n\n" + "\n".join(
        f"**{html.escape(r['class'])}**\n" + "".join(f"- removed: ~~{html.escape(d)}~~\n" for d in r["removed"])
        + "".join(f"- added: **{html.escape(d)}**\n" for d in r["added"]) for r in rows)


def saved_set_names(ctx, own: Optional[dict]) -> list[str]:
    """The sets a visitor can start from: the shipped ones, then their own (public: this session's saves;
    local: the descriptions/ folder)."""
    if ctx.policy.public:
        return sorted(shipped_names() - {"class_sets"}) + sorted(own or {})
    return list_description_sets()


def load_named_set(ctx, name: str, own: Optional[dict]) -> DescriptionSet:
    """A set by name (validated: never a path). Public mode: a shipped set or one saved in this session."""
    name = validate_name(str(name or ""))
    if own and name in own:
        return DescriptionSet.from_dict(own[name])
    if ctx.policy.public and name not in shipped_names():
        raise DescriptionError(f"no description set {name!r} in this session; shipped sets: "
                               + ", ".join(sorted(shipped_names() - {"class_sets"})))
    return load_description_set(name)


# --- who computes when ---------------------------------------------------------------------------
@contextmanager
def _quick(ctx, request) -> Iterator[None]:
    """Quick work for the scheduler; one that grows into a long job is refused while the visitor has another."""
    try:
        with ctx.scheduler.quick(ctx.session(request), grows_into="re-score of many new descriptions"):
            yield
    except BusyError as e:
        raise user_error(e) from None


# --- state <-> workbench -------------------------------------------------------------------------
def _state(wb: Workbench) -> dict:
    return {"baseline": wb.baseline.to_dict(), "previous": wb.previous.to_dict(), "current": wb.current.to_dict(),
            "combine": wb.combine}


def _workbench(ctx, model_key: str, state: Optional[dict]) -> Workbench:
    try:
        model = ctx.model(model_key)
    except DferclipError as e:
        raise user_error(e) from None
    wb = Workbench(model, text_cache=_Shared.text_cache, video_cache=_Shared.video_cache)
    if state:
        wb.baseline = DescriptionSet.from_dict(state["baseline"])
        wb.previous = DescriptionSet.from_dict(state["previous"])
        wb.current = DescriptionSet.from_dict(state["current"])
        wb.combine = state.get("combine", wb.combine)
    return wb


def _rows_df(ds: DescriptionSet) -> pd.DataFrame:
    return pd.DataFrame(descriptions_to_rows(ds), columns=HEADERS)


def _rows(df) -> list[list[str]]:
    if isinstance(df, pd.DataFrame):
        return df.fillna("").astype(str).values.tolist()
    if isinstance(df, dict):
        return [list(map(str, r)) for r in df.get("data", [])]
    return [list(map(str, r)) for r in (df or [])]


# --- outputs -------------------------------------------------------------------------------------
def _fmt_delta(x) -> str:
    if x is None:
        return ""
    return "±0.00" if abs(x) < 0.005 else f"{x:+.2f}"


def _pn_bars(classes: list[str], pn: Optional[dict]) -> Optional[str]:
    """The current version's positive (green) and negative (red) cosines per class as a chart, or None."""
    if pn is None or pn["current"] is None:
        return None
    bars = []
    for c, pos, neg in zip(classes, pn["current"]["positive"], pn["current"]["negative"]):
        bars += [Bar(c, "positive", pos), Bar(c, "negative", neg)]
    return bar_chart_html(PN_TITLE, bars, PN_COLORS)


def family_name(model) -> str:
    return FAMILY_NAMES.get(getattr(model, "family", ""), "the model")


def has_learned_prompts(model) -> bool:
    return model is None or getattr(model, "has_learned_prompts", True)


def zero_shot_label(model) -> str:
    """The zero-shot chart's title: CLIP's towers, or a zero-shot model's own video model (EmoCLIP)."""
    if has_learned_prompts(model):
        return MODE_LABELS["zero-shot"]
    return f"zero-shot ({family_name(model)}'s own video model)"


def no_learned_note(model) -> str:
    """Why a model without learned prompts shows zero-shot scores only; "" for the others."""
    if has_learned_prompts(model):
        return ""
    return (f"{family_name(model)} has no learned prompts: its scores are zero-shot, by the class descriptions, "
            "through its own video model.")


def _score_outputs(wb: Workbench, clip_names: list[str]):
    """(scores table, zero-shot bars, learned bars, contributions table, PN bars or None) for the first clip."""
    classes = wb.current.classes
    learned = has_learned_prompts(wb.model)
    titles = {"zero-shot": zero_shot_label(wb.model),
              "learned": PN_LEARNED_LABEL if wb.has_pn else MODE_LABELS["learned"]}
    if not clip_names:
        return empty_scores(classes, learned), "", "", empty_contributions(), None, ""
    report = wb.score_clips(clip_names[:1])["clips"][clip_names[0]]
    headline = headline_numbers(classes, report)
    table = {"class": classes}
    bars, contrib, pn = {"learned": ""}, [], None
    for mode in ("zero-shot", "learned") if learned else ("zero-shot",):
        r = report.get(mode)
        if r is None:
            table[f"{mode} %"] = ["n/a (class set differs from the model's)"] * len(classes)
            bars[mode] = ""
            continue
        table[f"{mode} logit"] = [f"{x:.3f}" for x in r["logits"]]
        table[f"{mode} %"] = [f"{p:.1f}" for p in r["probs"]]
        table[f"{mode} Δ prev"] = [_fmt_delta(d) for d in (r["delta_previous"] or [None] * len(classes))]
        table[f"{mode} Δ base"] = [_fmt_delta(d) for d in (r["delta_baseline"] or [None] * len(classes))]
        if r.get("pn") is not None:
            pn = _pn_bars(classes, r["pn"])
            table[f"{mode} cos⁺"] = [f"{x:.4f}" for x in r["pn"]["current"]["positive"]]
            table[f"{mode} cos⁻"] = [f"{x:.4f}" for x in r["pn"]["current"]["negative"]]
        rows = []
        for i, c in enumerate(classes):
            rows.append(Bar(c, "current", r["probs"][i]))
            if r["delta_baseline"] is not None:
                rows.append(Bar(c, "baseline", r["probs"][i] - r["delta_baseline"][i]))
        bars[mode] = bar_chart_html(f"{titles[mode]}, % for {clip_names[0]}", rows, VERSION_COLORS, unit=" %",
                                    limits=(0.0, 100.0))
        contrib += [{"mode": mode, "class": d["class"], "description": d["description"],
                     "similarity": round(d["similarity"], 3), "contribution": round(d["contribution"], 3)}
                    for d in r["descriptors"]]
        contrib += [{"mode": mode, "class": t["class"], "description": "negative: " + " / ".join(t["texts"]),
                     "similarity": round(t["similarity"], 3), "contribution": round(t["contribution"], 3)}
                    for t in r.get("negative_terms") or []]
    return pd.DataFrame(table), bars["zero-shot"], bars["learned"], pd.DataFrame(contrib), pn, headline


def empty_scores(classes, learned: bool = True) -> pd.DataFrame:
    """The scores table before a clip; without a learned column for a model without learned prompts."""
    table = {"class": list(classes), "zero-shot %": [""] * len(classes)}
    if learned:
        table["learned %"] = [""] * len(classes)
    return pd.DataFrame(table)


def empty_contributions() -> pd.DataFrame:
    return pd.DataFrame(columns=["mode", "class", "description", "similarity", "contribution"])


NO_CLIP_YET = ("**No clip yet**: predict one in the Predict tab (or click an example there); its scores show here "
               "and move with every edit.")


def headline_numbers(classes, report: dict) -> str:
    """Per mode, the top class with its % and its change from the baseline: the numbers an edit moves, said
    right under the table where the edit was made."""
    parts = []
    for mode in ("zero-shot", "learned"):
        r = report.get(mode)
        if r is None:
            continue
        k = int(np.argmax(r["probs"]))
        delta = r["delta_baseline"][k] if r["delta_baseline"] is not None else None
        parts.append(f"{mode} **{classes[k]} {r['probs'][k]:.1f} %**"
                     + (f" ({_fmt_delta(delta)} vs baseline)" if delta is not None else ""))
    return "Now: " + ", ".join(parts) if parts else ""


def pn_note(model) -> str:
    """How a PN model's learned scores are made (Markdown); "" for other models."""
    if not has_pn_descriptors(model):
        return ""
    pos_t, neg_t = model.descriptor_templates
    scale, weight = float(model.logit_scale), float(model.negative_weight)
    text = (f"**Positive vs negative descriptors.** This model's learned logit of a class is "
            f"{scale:g}·(cos⁺ − λ·cos⁻) with λ = {weight:g}: cos⁺ (green) is the clip's cosine with the "
            f"positive descriptor `{pos_t}` through the positive text adapters, cos⁻ (red) with the negative one "
            f"`{neg_t}` through the negative adapters. The negative term is one row per class in the "
            f"contributions table.")
    if getattr(getattr(model, "settings", None), "descriptors", None) == "label":
        own = model.settings.label_templates[0]
        text += (f" The model's own positive descriptor is the class label (`{own}`); here the descriptions go "
                 f"through the positive adapter as written (the paper's description alternative), so these "
                 f"scores are not the model's own predictions.")
    return text


def _eval_outputs(wb: Workbench):
    """(metrics table, per-class recall table, confusion matrices markdown)."""
    ev = wb.evaluate()
    if ev is None:
        return pd.DataFrame(columns=["mode", "UAR", "Δ prev", "Δ base", "WAR", "Δ prev ", "Δ base "]), \
            pd.DataFrame(), "No evaluation set loaded."
    if not ev["n"]:
        left = ", ".join(f"{k} ({v})" for k, v in ev["unmatched"].items())
        return pd.DataFrame(columns=["mode", "UAR", "WAR"]), pd.DataFrame(), (
            f"**No UAR/WAR: none of the evaluation set's labels is a class of this set** ({left}).")
    metrics, recall, confusion = [], {"class": ev["classes"]}, []
    for mode, r in ev["modes"].items():
        cur, dp, db = r["current"], r["delta_previous"], r["delta_baseline"]
        metrics.append({"mode": mode, "UAR": f"{cur.uar:.2f}", "Δ prev": _fmt_delta(dp and dp["uar"]),
                        "Δ base": _fmt_delta(db and db["uar"]), "WAR": f"{cur.war:.2f}",
                        "Δ prev ": _fmt_delta(dp and dp["war"]), "Δ base ": _fmt_delta(db and db["war"])})
        recall[f"{mode} recall %"] = ["" if x != x else f"{x:.1f}" for x in cur.recall]
        recall[f"{mode} Δ base"] = [_fmt_delta(x) for x in (db["recall"] if db else [None] * len(ev["classes"]))]
        header = "| true \\ predicted | " + " | ".join(ev["classes"]) + " |"
        lines = [f"**{mode}** confusion ({ev['n']} clips)", "", header,
                 "|" + "---|" * (len(ev["classes"]) + 1)]
        lines += [f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(ev["classes"], cur.confusion)]
        confusion.append("\n".join(lines))
    note = f"\n\n{len(ev['failed'])} clip(s) could not be read." if ev["failed"] else ""
    left = ""
    if ev["unmatched"]:
        names = ", ".join(f"{k} ({v})" for k, v in ev["unmatched"].items())
        left = (f"**{sum(ev['unmatched'].values())} clip(s) left out: their labels are not classes of this set:** "
                f"{names}. UAR/WAR are over the other {ev['n']} clip(s).\n\n")
    return pd.DataFrame(metrics), pd.DataFrame(recall), left + "\n\n".join(confusion) + note


def _flags_md(wb: Workbench) -> str:
    flags = wb.flags()
    if not flags:
        return "No flags: no description names an emotion, all fit CLIP's 77-token context."
    return "\n".join(f"- **{f['class']}** ({f['kind']}): {f['message']} — _{f['description'][:80]}_" for f in flags)


# --- event functions that score (module-level: tests call them directly) ----------------------------
def intro_text(model) -> str:
    """The tab's intro: what the learned scores are for this model's family (None: not loaded yet)."""
    if not has_learned_prompts(model):
        return ("Edit the class descriptions (one row per descriptor; several per class are combined) and see the "
                f"scores of the current clip change, against the previous version and the saved baseline. "
                f"{no_learned_note(model)} Your edits stay when you switch models.")
    if model is None:
        learned = "the model's learned prompts"
    elif has_pn_descriptors(model):
        learned = ("FineCLIPER's learned positive/negative text adapters (each description is a positive descriptor "
                   "against the class's negative one)")
    else:
        learned = "DFER-CLIP's learned prompts (class-specific context tokens before each description)"
    return ("Edit the class descriptions (one row per descriptor; several per class are combined) and see the "
            f"scores of the current clip change: zero-shot CLIP and {learned}, against the previous version and "
            "the saved baseline. Your edits stay when you switch models.")


def workbench_outputs(wb: Workbench, clip, eval_set, message: str = "") -> tuple:
    """Values of the scoring outputs: (state, status, flags, zero-shot bars, learned bars, PN bars, PN note,
    scores table, contributions table, metrics, recall, confusion, intro). ``clip``: the page's ClipRecord
    or None."""
    names = []
    if clip is not None:
        video = clip.video_for(wb.model.input_config) if hasattr(clip, "video_for") else clip.video
        if video is not None:
            names = [wb.add_clip(video, getattr(clip, "name", None) or Path(getattr(clip, "path", "clip")).name)]
        else:
            message += " The current clip was prepared for another model; predict it again with this one."
    if eval_set is not None:
        wb.set_evaluation_embeddings(eval_set)
    table_out, zero, learned, contrib, pn, headline = _score_outputs(wb, names)
    metrics_out, recall_out, confusion_out = _eval_outputs(wb)
    encoded = wb.scorer.tally.encoded  # this request's own encodings, not other visitors'
    scored = f"clip: {names[0]}" if names else "no clip yet: predict one in the Predict tab"
    changed = [r["class"] for r in diff_description_sets(wb.baseline, wb.current)]
    vs_base = f"differs from baseline in: {', '.join(changed)}" if changed else "same as baseline"
    text = (f"{wb.current.name} v{wb.current.version} · {vs_base} · {scored} · {encoded} text encoding(s) "
            f"computed (a new description: one per prompt template and mode), the rest cached. {message} "
            f"{no_learned_note(wb.model)}").strip()
    if headline:  # the numbers an edit moves, on a line of their own under the table
        text += f"  \n{headline}"
    pn_plot = gr.HTML(pn or "", visible=pn is not None)
    note = gr.Markdown(pn_note(wb.model), visible=wb.has_pn)
    return (_state(wb), text, _flags_md(wb), gr.HTML(zero, visible=bool(zero)),
            gr.HTML(learned, visible=bool(learned)), pn_plot, note, table_out,
            contrib,
            metrics_out, recall_out, confusion_out, intro_text(wb.model))


def start_event(ctx, model_key, class_set_v, custom_v, saved_v, combine_v, clip, eval_set, own=None) -> tuple:
    """Start from a class set, a saved set or custom classes: (table, class choices) + the scoring outputs."""
    wb = _workbench(ctx, model_key, None)
    try:
        if saved_v:
            ds = load_named_set(ctx, saved_v, own)
        else:
            ds = starting_set(str(class_set_v or ""), next(csv.reader([str(custom_v or "")]), []))
    except DferclipError as e:
        raise user_error(e) from None
    wb.start_from(ds)
    wb.combine = combine_v
    same = same_text_as(ds) if not saved_v and ds.class_set != next(iter(class_set_choices())) else []
    why = (f"{ds.class_set} has {', '.join(same)}'s classes, and the official DFER-CLIP code describes them with "
           f"the same sentences: the text is the same on purpose." if same else "")
    out = workbench_outputs(wb, clip, eval_set, why)
    return (_rows_df(ds), gr.update(choices=ds.classes, value=[])) + out


def rescore_event(ctx, model_key, rows, state_v, combine_v, clip, eval_set) -> tuple:
    """The table's rows become the current version; the scoring outputs."""
    wb = _workbench(ctx, model_key, state_v)
    wb.combine = combine_v
    try:
        wb.edit_rows(_rows(rows))
    except DferclipError as e:
        raise user_error(e) from None
    return workbench_outputs(wb, clip, eval_set)


def unchanged(rows, state_v, combine_v) -> bool:
    """Whether the table and combine mode are what ``state_v`` already scored (a repeated input event)."""
    if not state_v or combine_v != state_v.get("combine"):
        return False
    current = DescriptionSet.from_dict(state_v["current"])
    try:
        return rows_to_descriptions(_rows(rows), current).descriptions == current.descriptions
    except DferclipError:
        return False


def has_unsaved_edits(state_v) -> bool:
    if not state_v:
        return False
    return bool(diff_description_sets(DescriptionSet.from_dict(state_v["baseline"]),
                                      DescriptionSet.from_dict(state_v["current"])))


def switch_model_event(ctx, model_key, state_v, combine_v, clip, eval_set) -> tuple:
    """After a model switch: the same current set (edits kept), scored by the new model; an evaluation set
    embedded by another model is dropped. (evaluation state,) + the scoring outputs."""
    wb = _workbench(ctx, model_key, state_v)
    wb.combine = combine_v
    message = ""
    if eval_set is not None and getattr(eval_set, "model_key", "") != model_key:
        eval_set, message = None, "The evaluation set was embedded by another model: load it again for this one."
    if not wb.learned_available() and has_learned_prompts(wb.model):
        message += " Learned scores need the model's own classes; zero-shot scores shown."
    return (eval_set,) + workbench_outputs(wb, clip, eval_set, message)


def evaluation_clips(ctx, classes, files, folder="", csv_path="", hf_path="", numeric: bool = True
                     ) -> list[LabelledClip]:
    """The labelled clips a visitor asked for: uploaded files (a labels CSV naming only uploaded clips) or, in
    local mode only, a folder, labels CSV or datasets folder on this machine. ``numeric``: whether label
    numbers may index ``classes`` (a built-in class set only)."""
    server = [v for v in (folder, csv_path, hf_path) if v]
    if server and ctx.policy.public:
        raise DataError("this is a public app: it reads no file of its server; upload the clips and their CSV")
    limit = ctx.policy.max_eval_clips
    if files:
        paths = [Path(getattr(f, "name", None) or getattr(f, "path", None) or str(f)) for f in files]
        csvs = [p for p in paths if p.suffix.lower() == ".csv"]
        if len(csvs) != 1:
            raise DataError("upload exactly one labels CSV with the clips")
        if len(paths) - 1 > limit:
            raise DataError(f"{len(paths) - 1} clips uploaded: an evaluation set here holds at most {limit}")
        uploaded = {p.name: str(p) for p in paths if p != csvs[0]}
        return read_uploaded_labels(csvs[0], uploaded, classes, limit, allow_local_paths=not ctx.policy.public,
                                    numeric=numeric)
    elif hf_path:
        clips = read_hf_dataset(hf_path, classes, numeric=numeric)
    elif csv_path:
        clips = read_labels_csv(csv_path, classes, folder or None, numeric=numeric)
    else:
        raise DataError("give a labels CSV with clips" + ("" if ctx.policy.public else ", or a datasets folder"))
    if len(clips) > limit:
        raise DataError(f"{len(clips)} clips: an evaluation set here holds at most {limit}")
    return clips


def set_file(set_dict: dict) -> str:
    """The set as a JSON file named ``<name>-v<version>.json`` (a name that is no valid file name becomes
    "descriptions"), in a folder per content so that identical sets share one file."""
    import hashlib
    import json

    ds = DescriptionSet.from_dict(set_dict)
    try:
        name = validate_name(ds.name)
    except DferclipError:
        name = "descriptions"
    data = ds.to_dict()
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / "dferclip-sets"
    path = root / digest / f"{name}-v{ds.version}.json"
    if not path.is_file():
        write_json(path, data)
        prune_folders(root, keep=MAX_SET_FILES)
    return str(path)


MAX_SET_FILES = 2000  # downloadable set files kept (a few kB each); the oldest go first


# --- the tab ---------------------------------------------------------------------------------------
@dataclass
class WorkbenchView:
    """The tab's components that its sections share. The editor (:func:`build_editor`) makes them; each
    section (``ui/explain.py``, ``ui/generate.py``, ``ui/evaluation.py``, ``ui/set_files.py``,
    ``ui/compare.py``, and ``ui/share.py`` from outside the tab) builds its own components and wires its own
    events."""

    tab: gr.Tab
    first: DescriptionSet  # the set the page starts from
    state: gr.State  # baseline / previous / current sets and the combine mode
    eval_state: gr.State  # the evaluation set's embeddings
    own_sets: gr.State  # public mode: the sets this visitor saved (name -> set dict)
    stash: gr.State  # unsaved edits put aside by a change of class set (restorable)
    class_set: gr.Radio
    saved: gr.Dropdown
    combine: gr.Radio
    table: gr.Dataframe
    status: gr.Markdown
    only: gr.Dropdown  # Generate's classes: drawn by that section, its choices follow the class set
    metrics: gr.Dataframe  # UAR / WAR, per-class recall, confusion: drawn by the evaluation section
    recall: gr.Dataframe
    confusion: gr.Markdown
    score_outputs: list = field(default_factory=list)  # what every scoring fills (workbench_outputs' order)
    start_outputs: list = field(default_factory=list)  # a new starting set: table, class pickers, scores, stash


def started(ds_classes, out, stash_v, note=""):
    """A start's outputs (``start_outputs``) from (table, Generate's classes) + the scoring outputs: the status
    gets ``note``; the put-aside edits and their Restore button follow."""
    first_class = ds_classes[0] if ds_classes else None
    out = list(out)
    out[3] = (out[3] + " " + note).strip()  # the status
    return (out[0], out[1], gr.update(choices=ds_classes, value=first_class), *out[2:], stash_v,
            gr.update(visible=stash_v is not None))


def build_editor(ctx, tab) -> WorkbenchView:
    """The set picker, the table, the scores of the current clip and their events: starting from a set,
    editing, re-scoring, restoring put-aside edits, switching models."""
    sets = class_set_choices()
    try:  # the default weights may still be downloading: the intro is then generic until the first score
        default_model = ctx.model(ctx.registry.default_key)
    except DferclipError:
        default_model = None
    intro = gr.Markdown(intro_text(default_model), elem_id="workbench-intro")
    first = starting_set(next(iter(sets)))
    state = gr.State({"baseline": first.to_dict(), "previous": first.to_dict(), "current": first.to_dict(),
                      "combine": COMBINE_MODES[0]})
    eval_state, own_sets, stash = gr.State(None), gr.State({}), gr.State(None)
    with gr.Row():
        class_set = gr.Radio(list(sets) + ["custom"], value=next(iter(sets)), label="Class set", scale=2)
        custom = gr.Textbox(label="Custom classes", scale=2, placeholder="e.g. happy, sad, bored",
                            info="comma-separated; press Enter to apply", elem_id="custom-classes")
        saved = gr.Dropdown(saved_set_names(ctx, None), value=None, label="Start from a saved set", scale=2,
                            elem_id="saved-set")
        combine = gr.Radio(list(COMBINE_MODES), value="mean-embedding", label="Combine descriptors", scale=2)
    table = gr.Dataframe(_rows_df(first), headers=HEADERS, datatype=["str", "str"], type="pandas", interactive=True,
                         wrap=True, label="Descriptions (class column: a class name of the set)",
                         elem_id="descriptions-table")
    with gr.Row(elem_id="workbench-actions"):
        rescore_btn = gr.Button("Re-score", variant="primary")
        add_class = gr.Dropdown(first.classes, value=first.classes[0], label="Add a row for", scale=1,
                                elem_id="add-row-class")
        add_row_btn = gr.Button("Add descriptor row")
        restore_btn = gr.Button("Restore edits", visible=False, elem_id="restore-edits")
    status = gr.Markdown(NO_CLIP_YET, elem_id="workbench-status")
    flags = gr.Markdown(label="Flags")
    with gr.Row(elem_id="workbench-charts"):
        bars_zero = gr.HTML(visible=False, elem_id="bars-zero-shot", css_template=CHART_CSS, min_width=280)
        bars_learned = gr.HTML(visible=False, elem_id="bars-learned", css_template=CHART_CSS, min_width=280)
    # positive/negative descriptor models only (FineCLIPER); hidden for the others
    bars_pn = gr.HTML(visible=False, elem_id="workbench-pn", css_template=CHART_CSS)
    pn_md = gr.Markdown(visible=False, elem_id="workbench-pn-note")
    scores = gr.Dataframe(empty_scores(first.classes, has_learned_prompts(default_model)), interactive=False,
                          elem_id="workbench-scores",
                          label="Scores of the current clip (logit = 100·cos; %; Δ of % in points)")
    with gr.Accordion("Per-descriptor contributions", open=True):
        contributions = gr.Dataframe(empty_contributions(), interactive=False, wrap=True,
                                     elem_id="workbench-contributions", column_widths=CONTRIBUTION_WIDTHS,
                                     label="similarity = 100·cos(clip, descriptor); a class's logit is the sum of "
                                           "its contributions")
    # drawn by their sections further down (render=False here: the editor's events fill them)
    only = gr.Dropdown(first.classes, value=[], multiselect=True, label="Classes (empty: all)", render=False)
    metrics = gr.Dataframe(label="UAR / WAR (%)", interactive=False, elem_id="workbench-metrics", render=False)
    recall = gr.Dataframe(label="Per-class recall (%)", interactive=False, render=False)
    confusion = gr.Markdown(render=False)

    score_outputs = [state, status, flags, bars_zero, bars_learned, bars_pn, pn_md, scores, contributions, metrics,
                     recall, confusion, intro]
    view = WorkbenchView(tab, first, state, eval_state, own_sets, stash, class_set, saved, combine, table, status,
                         only, metrics, recall, confusion, score_outputs,
                         [table, only, add_class] + score_outputs + [stash, restore_btn])

    def start(model_key, class_set_v, custom_v, saved_v, combine_v, clip, eval_set, own, state_v, stash_v,
              request: gr.Request = None):
        names = [c for c in next(csv.reader([str(custom_v or "")]), []) if c.strip()]
        if class_set_v == "custom" and not saved_v and not names:  # nothing typed yet: say how, change nothing
            skip = [gr.skip()] * len(view.start_outputs)
            skip[4] = "Type the custom class names, comma-separated, and press Enter to apply them."
            return tuple(skip)
        with _quick(ctx, request):
            out = start_event(ctx, model_key, class_set_v, custom_v, saved_v, combine_v, clip, eval_set, own)
        note = ""
        if has_unsaved_edits(state_v):
            stash_v = state_v
            old = DescriptionSet.from_dict(state_v["current"])
            note = f"Your unsaved edits of {old.name} were put aside: **Restore edits** brings them back."
        return started(DescriptionSet.from_dict(out[2]["current"]).classes, out, stash_v, note)

    def restore(model_key, stash_v, combine_v, clip, eval_set, request: gr.Request = None):
        if not stash_v:
            raise user_error("no edits were put aside")
        with _quick(ctx, request):
            wb = _workbench(ctx, model_key, stash_v)
            wb.combine = combine_v
            out = (_rows_df(wb.current), gr.update(choices=wb.current.classes, value=[])) + workbench_outputs(
                wb, clip, eval_set, "Edits restored.")
        return started(wb.current.classes, out, None)

    def rescore(model_key, rows, state_v, combine_v, clip, eval_set, request: gr.Request = None):
        with _quick(ctx, request):
            return rescore_event(ctx, model_key, rows, state_v, combine_v, clip, eval_set)

    def rescore_if_changed(model_key, rows, state_v, combine_v, clip, eval_set, request: gr.Request = None):
        # the table fires again for an edit already scored, or being scored by the event before it
        if unchanged(rows, state_v, combine_v) or not _LATEST_EDIT.first(ctx.session(request), model_key, rows,
                                                                          combine_v):
            return tuple(gr.skip() for _ in score_outputs)
        return rescore(model_key, rows, state_v, combine_v, clip, eval_set, request)

    def switch_model(model_key, state_v, combine_v, clip, eval_set, request: gr.Request = None):
        with _quick(ctx, request):
            return switch_model_event(ctx, model_key, state_v, combine_v, clip, eval_set)

    def add_row(rows, cls):
        """A new empty row for ``cls``, after that class's last row."""
        data = _rows(rows)
        at = max((i + 1 for i, r in enumerate(data) if r and r[0] == cls), default=len(data))
        return pd.DataFrame(data[:at] + [[cls or "", ""]] + data[at:], columns=HEADERS)

    quick = ctx.groups["quick"]  # re-scores, starts, switches: quick work unless it grows (ui/scheduler.py)
    start_inputs = [ctx.model_dropdown, class_set, custom, saved, combine, ctx.clip, eval_state, own_sets, state,
                    stash]
    for trigger in (class_set.input, saved.input, custom.submit):
        trigger(start, start_inputs, view.start_outputs, api_visibility="private", **quick)
    restore_btn.click(restore, [ctx.model_dropdown, stash, combine, ctx.clip, eval_state], view.start_outputs,
                      api_visibility="private", **quick)
    # a model switch keeps the current set (edits included) and scores it with the new model; it follows the
    # model bar's load (a failed load has put the previous key back), never the dropdown's raw change
    ctx.model_selected.success(switch_model, [ctx.model_dropdown, state, combine, ctx.clip, eval_state],
                               [eval_state] + score_outputs, api_visibility="private", **quick)
    rescore_inputs = [ctx.model_dropdown, table, state, combine, ctx.clip, eval_state]
    rescore_btn.click(rescore, rescore_inputs, score_outputs, api_name="rescore_descriptions", **quick)
    table.input(rescore_if_changed, rescore_inputs, score_outputs, api_visibility="private", trigger_mode="always_last",
                **quick)
    combine.input(rescore_if_changed, rescore_inputs, score_outputs, api_visibility="private", **quick)
    add_row_btn.click(add_row, [table, add_class], [table], api_visibility="private")
    if ctx.clip is not None:
        ctx.clip.change(rescore, rescore_inputs, score_outputs, api_visibility="private", **quick)
    return view
