"""The description workbench engine (used by the app's "Descriptions" tab and ``python -m dferclip describe``).

It holds three description sets: the saved **baseline** the user started from, the **previous** version and
the **current** one. Re-scoring compares the three for the current clips (zero-shot and learned prompts side by
side, per-descriptor contributions) and, when a labelled evaluation set is attached, recomputes UAR, WAR,
per-class recall and the confusion matrix. Video embeddings are computed once per clip (in memory, and on disk
for evaluation sets); only descriptions whose text changed are re-encoded (:mod:`dferclip.scoring`).

Labelled sets are read and embedded in :mod:`dferclip.labelled`; the :class:`Workbench` holds the three versions
and scores them. It is one concern (three versions of a set compared on one model's embeddings), so it stays
one class: its clip memory, evaluation set and LLM generation are a few lines each around that comparison.

With a positive/negative-descriptor model (FineCLIPER) the learned mode scores each description as a positive
descriptor (written into ``model.descriptor_templates``) against the class's negative one, and the per-clip
results carry both cosines per class for the three versions (``"pn"``) and the negative terms of the logits.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import pacing
from .errors import DataError, DescriptionError
from .labelled import EmbeddedSet, LabelledClip, default_ingest, embed_clips
from .metrics import Metrics, compare_predictions, compute_metrics
from .scoring import (
    COMBINE_MODES,
    SCORE_MODES,
    Scorer,
    Scores,
    TextEmbeddingCache,
    VideoEmbedding,
    VideoEmbeddingCache,
    file_digest,
    has_pn_descriptors,
)
from .text.descriptions import (
    DescriptionSet,
    diff_description_sets,
    load_class_sets,
    load_description_set,
    official_descriptions,
    save_description_set,
)

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "default"  # set_evaluation: dferclip.files.cache_dir() / "embeddings"
MAX_CLIPS = 64


# --- class sets and table rows ---------------------------------------------------------------------
def class_set_choices() -> dict[str, list[str]]:
    """Built-in class sets (DFEW, FERV39k: 7 classes; MAFW: 11)."""
    return load_class_sets()


def starting_set(class_set: str, custom_classes: Sequence[str] = ()) -> DescriptionSet:
    """The official descriptions for a built-in class set, or placeholders for custom classes."""
    sets = load_class_sets()
    if class_set in sets:
        try:  # the class set's own shipped set (FERV39k has one), else the official set of that size
            ds = load_description_set(f"dferclip-official-{class_set.lower()}")
        except DescriptionError:
            ds = official_descriptions(len(sets[class_set]))
        return dataclasses.replace(ds, class_set=class_set)
    classes = [c.strip() for c in custom_classes if c and c.strip()]
    if not classes:
        raise DescriptionError("give the custom class names (comma-separated)")
    return DescriptionSet(classes=classes, descriptions=[[f"a face showing {c}."] for c in classes],
                          name="custom", class_set="custom",
                          provenance={"source": "placeholders; edit or generate the descriptions"})


def same_text_as(ds: DescriptionSet) -> list[str]:
    """The other built-in class sets whose shipped descriptions are word for word ``ds``'s (FERV39k and DFEW:
    the official code describes the same seven classes with the same sentences)."""
    out = []
    for other in load_class_sets():
        if other == ds.class_set:
            continue
        try:
            theirs = load_description_set(f"dferclip-official-{other.lower()}")
        except DescriptionError:
            continue
        if theirs.classes == ds.classes and theirs.descriptions == ds.descriptions:
            out.append(other)
    return out


def numeric_labels_allowed(ds: DescriptionSet) -> bool:
    """Whether 0-based label numbers may index ``ds``'s classes: only for an unchanged built-in class set."""
    sets = load_class_sets()
    return ds.class_set in sets and list(sets[ds.class_set]) == list(ds.classes)


def descriptions_to_rows(ds: DescriptionSet) -> list[list[str]]:
    """One [class, description] row per descriptor."""
    return [[c, d] for c, descs in zip(ds.classes, ds.descriptions) for d in descs]


def rows_to_descriptions(rows: Sequence[Sequence[str]], base: DescriptionSet) -> DescriptionSet:
    """A table of [class, description] rows back into a set with ``base``'s classes, order and metadata."""
    per_class: dict[str, list[str]] = {c: [] for c in base.classes}
    for row in rows:
        if len(row) < 2:
            continue
        cls, text = str(row[0] or "").strip(), str(row[1] or "").strip()
        if not cls and not text:
            continue
        if cls not in per_class:
            raise DescriptionError(f"unknown class {cls!r} in the table; classes: {', '.join(base.classes)}")
        if text:
            per_class[cls].append(text)
    return base.with_descriptions([per_class[c] for c in base.classes])


def _pn_report(i: int, now: Scores, previous: Optional[Scores], baseline: Optional[Scores]) -> Optional[dict]:
    """Clip ``i``'s positive and negative cosines per class for the three versions (None: not a PN score)."""
    if now.positive is None:
        return None

    def one(s: Optional[Scores]) -> Optional[dict]:
        if s is None or s.positive is None:
            return None
        return {"positive": s.positive[i].tolist(), "negative": s.negative[i].tolist()}

    return {"negative_weight": now.negative_weight, "current": one(now), "previous": one(previous),
            "baseline": one(baseline)}


# --- the workbench -------------------------------------------------------------------------------
def _metric_delta(a: Metrics, b: Optional[Metrics]) -> Optional[dict]:
    if b is None:
        return None
    recall = [None if (math.isnan(x) or math.isnan(y)) else x - y for x, y in zip(a.recall, b.recall)]
    return {"uar": a.uar - b.uar, "war": a.war - b.war, "recall": recall}


FLAG_PIECE = 256  # descriptions flag-checked between two pacing checkpoints (about 0.7 s when all are new)

class Workbench:
    """Current / previous / baseline description sets, scored for clips and a labelled set with one model."""

    def __init__(self, model, descriptions: Optional[DescriptionSet] = None, *, combine: str = "mean-embedding",
                 templates: Optional[Sequence[str]] = None, text_cache: Optional[TextEmbeddingCache] = None,
                 video_cache: Optional[VideoEmbeddingCache] = None):
        self.text_cache = text_cache if text_cache is not None else TextEmbeddingCache()
        self.video_cache = video_cache if video_cache is not None else VideoEmbeddingCache()
        self.templates = templates
        self.combine = combine
        self.clips: "OrderedDict[str, VideoEmbedding]" = OrderedDict()
        self.evaluation: Optional[EmbeddedSet] = None
        self.model = None
        self.set_model(model)
        self.start_from(descriptions or model.descriptions)

    # --- state ---------------------------------------------------------------------------------
    @property
    def combine(self) -> str:
        return self._combine

    @combine.setter
    def combine(self, value: str) -> None:
        if value not in COMBINE_MODES:
            raise ValueError(f"unknown combine mode {value!r}; use one of {COMBINE_MODES}")
        self._combine = value

    def set_model(self, model) -> None:
        """Switch models; cached clip embeddings belong to the old one and are dropped (caches are keyed)."""
        if model is not self.model and self.model is not None:
            self.clips.clear()
            self.evaluation = None
        self.model = model
        self.scorer = Scorer(model, self.text_cache, self.templates)

    def start_from(self, ds: DescriptionSet) -> None:
        """A saved set becomes baseline, previous and current."""
        self.baseline = self.previous = self.current = ds

    def edit(self, ds: DescriptionSet) -> list[dict]:
        """Make ``ds`` current (the old current becomes previous); returns the diff to the old current."""
        changes = diff_description_sets(self.current, ds)
        if changes or ds.classes != self.current.classes:
            self.previous, self.current = self.current, ds
        return changes

    def edit_rows(self, rows: Sequence[Sequence[str]]) -> list[dict]:
        return self.edit(rows_to_descriptions(rows, self.current))

    def save_as(self, name: str, version: Optional[int] = None, **provenance) -> DescriptionSet:
        """The current set renamed ``name`` (validated), with provenance; it becomes current and baseline.
        Nothing is written (the app's public mode keeps it in the visitor's session)."""
        from .text.descriptions import validate_name

        prov = dict(self.current.provenance)
        prov.update({k: v for k, v in provenance.items() if v is not None})
        if self.current.name != name:
            prov.setdefault("derived_from", f"{self.current.name} v{self.current.version}")
        ds = dataclasses.replace(self.current, name=validate_name(name), provenance=prov,
                                 version=version or self.current.version)
        self.current = self.baseline = ds
        return ds

    def save(self, name: str, folder: Optional[Path] = None, **provenance) -> Path:
        """Save the current set as ``name`` (validated, atomic; an earlier version is kept in the folder's
        history, a shipped name is refused); it becomes the baseline."""
        ds = self.save_as(name, **provenance)
        return save_description_set(ds, folder)

    def load(self, name_or_path: str | Path, folder: Optional[Path] = None) -> DescriptionSet:
        ds = load_description_set(name_or_path, folder)
        self.start_from(ds)
        return ds

    def flags(self, ds: Optional[DescriptionSet] = None) -> list[dict]:
        """Leak and length flags per descriptor (learned prompts reserve the model's context tokens)."""
        from .text.llm import check_description

        ds = ds or self.current
        reserved = self.reserved_tokens()
        templates = self.scorer.templates
        rows = []
        checked = 0
        for cls, descs in zip(ds.classes, ds.descriptions):
            for d in descs:
                checked += 1
                if checked % FLAG_PIECE == 0:
                    pacing.checkpoint()  # a piece of a long re-score
                for f in check_description(d, cls, ds.classes, reserved_tokens=reserved, templates=templates):
                    rows.append({"class": cls, "description": d, "kind": f.kind, "message": f.message})
        return rows

    @property
    def has_pn(self) -> bool:
        """Whether the model scores classes by positive and negative descriptors (FineCLIPER)."""
        return has_pn_descriptors(self.model)

    def reserved_tokens(self) -> int:
        """Tokens the learned path puts around a description: DFER-CLIP's context tokens, or the words of a
        PN model's positive descriptor template (the longest over its classes); none without learned prompts."""
        if not self.model.has_learned_prompts:
            return 0
        if not self.has_pn:
            return self.model.config.prompt.n_ctx
        from .text.tokens import token_count

        template = self.model.descriptor_templates[0]
        return max(token_count(template.format(name=c, description="").strip()) - 2 for c in self.model.class_names)

    # --- clips -----------------------------------------------------------------------------------
    def add_clip(self, video: torch.Tensor, name: Optional[str] = None) -> str:
        """Embed a model-input tensor (1, T, 3, H, W) once; returns its name."""
        from .scoring import tensor_digest

        key = tensor_digest(video)
        return self._keep_clip(name or key[:12], self.video_cache.get(self.model, video, key=key))

    def _keep_clip(self, name: str, embedding) -> str:
        """Remember a clip's embedding under ``name``, dropping the oldest beyond :data:`MAX_CLIPS`."""
        self.clips[name] = embedding
        self.clips.move_to_end(name)
        while len(self.clips) > MAX_CLIPS:
            self.clips.popitem(last=False)
        return name

    def add_clip_file(self, path: str | Path, ingest_fn=None) -> str:
        """Ingest a video file (face crops, sampling) and embed it; keyed by file content."""
        if ingest_fn is None:
            ingest_fn, _ = default_ingest(self.model)
        path = str(path)
        if not Path(path).is_file():
            raise DataError(f"no such video file: {path}")
        emb = self.video_cache.get(self.model, key=f"file:{file_digest(path)}:{self._input_key()}",
                                   load_video=lambda: ingest_fn(path))
        return self._keep_clip(Path(path).name, emb)

    def _input_key(self) -> str:
        return hashlib.sha256(repr(self.model.input_config).encode()).hexdigest()[:12]

    def set_evaluation(self, clips: Sequence[LabelledClip], *, cache_dir: Optional[str | Path] = DEFAULT_CACHE_DIR,
                       cache: Optional[VideoEmbeddingCache] = None, ingest_fn=None, ingest_settings=None,
                       progress=None, limits=None) -> EmbeddedSet:
        """Attach a labelled set: embeddings computed once (with progress) and cached on disk in ``cache_dir``
        (or in ``cache``, e.g. the app's bounded one); ``limits`` bound each video read."""
        if cache is None:
            cache = self.video_cache
            if cache_dir == DEFAULT_CACHE_DIR:
                from .files import cache_dir as root

                cache_dir = root() / "embeddings"
            if cache_dir is not None and cache.folder != Path(cache_dir):
                cache = VideoEmbeddingCache(maxsize=max(4096, len(clips)), folder=cache_dir)
        self.evaluation = embed_clips(self.model, clips, cache, ingest_fn=ingest_fn,
                                      ingest_settings=ingest_settings, progress=progress, limits=limits)
        return self.evaluation

    def set_evaluation_embeddings(self, embedded: EmbeddedSet) -> None:
        self.evaluation = embedded

    # --- scoring ---------------------------------------------------------------------------------
    def learned_available(self, ds: Optional[DescriptionSet] = None) -> bool:
        """Learned prompts need a model that has them (EmoCLIP has none) and its classes (DFER-CLIP's contexts are
        class-specific)."""
        return self.model.has_learned_prompts and (ds or self.current).num_classes == self.model.num_classes

    def modes(self) -> list[str]:
        return [m for m in SCORE_MODES if m == "zero-shot" or self.learned_available()]

    def _scores(self, videos: torch.Tensor, ds: DescriptionSet, mode: str) -> Optional[Scores]:
        if mode == "learned" and not self.learned_available(ds):
            return None
        return self.scorer.score(videos, ds, mode, self.combine)

    def _comparable(self, ds: DescriptionSet) -> bool:
        return ds.classes == self.current.classes

    def score_clips(self, names: Optional[Sequence[str]] = None) -> dict:
        """Per clip and mode: probabilities (%) now, deltas (points) vs previous and baseline, descriptors."""
        names = list(names) if names is not None else list(self.clips)
        out = {"classes": list(self.current.classes), "combine": self.combine, "clips": {}}
        if not names:
            return out
        for mode in self.modes():
            v = torch.stack([self.clips[n].for_mode(mode) for n in names])
            now = self._scores(v, self.current, mode)
            prev = self._scores(v, self.previous, mode) if self._comparable(self.previous) else None
            base = self._scores(v, self.baseline, mode) if self._comparable(self.baseline) else None
            probs = now.probs * 100
            negatives = self.scorer.negative_texts(self.current) if now.negative is not None else None
            for i, name in enumerate(names):
                rows = []
                for c, (cls, descs) in enumerate(zip(self.current.classes, self.current.descriptions)):
                    for j, d in enumerate(descs):
                        rows.append({"class": cls, "description": d,
                                     "similarity": float(now.similarities[c][i, j]),
                                     "contribution": float(now.contributions[c][i, j])})
                out["clips"].setdefault(name, {})[mode] = {
                    "prediction": self.current.classes[int(now.predictions[i])],
                    "logits": now.logits[i].tolist(),
                    "probs": probs[i].tolist(),
                    "delta_previous": None if prev is None else (probs[i] - prev.probs[i] * 100).tolist(),
                    "delta_baseline": None if base is None else (probs[i] - base.probs[i] * 100).tolist(),
                    "descriptors": rows,
                    "pn": _pn_report(i, now, prev, base),
                    "negative_terms": [] if negatives is None else [
                        {"class": cls, "texts": negatives[c],
                         "similarity": float(self.scorer.logit_scale * now.negative[i, c]),
                         "contribution": float(now.negative_contributions[i, c])}
                        for c, cls in enumerate(self.current.classes)],
                }
        return out

    def evaluate(self) -> Optional[dict]:
        """UAR, WAR, per-class recall, confusion for current/previous/baseline, both modes, with deltas."""
        ev = self.evaluation
        if ev is None:
            return None
        n = self.current.num_classes
        labels, keep, unmatched = self._labels_by_name(ev)
        out = {"classes": list(self.current.classes), "n": len(labels), "failed": list(ev.failed),
               "unmatched": unmatched, "modes": {}}
        if not labels:
            return out
        for mode in self.modes():
            v = ev.for_mode(mode)[keep]
            results = {}
            for which, ds in (("current", self.current), ("previous", self.previous), ("baseline", self.baseline)):
                if which == "current" or self._comparable(ds):
                    s = self._scores(v, ds, mode)
                    results[which] = compute_metrics(labels, s.predictions.tolist(), n)
            cur = results["current"]
            out["modes"][mode] = {
                "current": cur,
                "previous": results.get("previous"),
                "baseline": results.get("baseline"),
                "delta_previous": _metric_delta(cur, results.get("previous")),
                "delta_baseline": _metric_delta(cur, results.get("baseline")),
            }
        return out

    def compare(self, a: DescriptionSet, b: DescriptionSet, *, confidence: float = 0.95, resamples: int = 2000,
                seed: int = 0) -> dict:
        """Two description sets on the evaluation set, per scoring mode both can use: each one's UAR, WAR and
        per-class recall, B - A with paired stratified-bootstrap intervals (seeded), the exact McNemar test, and
        the clips whose prediction flips (path, label, A's and B's prediction)."""
        ev = self.evaluation
        if ev is None:
            raise DataError("compare needs an evaluation set (a labelled set of clips)")
        for ds in (a, b):
            if ds.classes != self.current.classes:
                raise DescriptionError(f"set {ds.name!r} has other classes than the evaluation ({ds.classes})")
        labels, keep, unmatched = self._labels_by_name(ev)
        if not labels:
            raise DataError("no clip of the evaluation set has a label among the classes")
        classes = list(self.current.classes)
        paths = [ev.paths[int(i)] for i in keep]
        out = {"classes": classes, "n": len(labels), "unmatched": unmatched, "a": a.name, "b": b.name, "modes": {}}
        for mode in self.modes():
            v = ev.for_mode(mode)[keep]
            sa, sb = self._scores(v, a, mode), self._scores(v, b, mode)
            if sa is None or sb is None:
                continue
            pa, pb = sa.predictions.tolist(), sb.predictions.tolist()
            cmp = compare_predictions(labels, pa, pb, len(classes), confidence=confidence, resamples=resamples,
                                      seed=seed)
            out["modes"][mode] = {"comparison": cmp, "flipped": [
                {"path": paths[i], "label": classes[labels[i]], "a": classes[pa[i]], "b": classes[pb[i]]}
                for i in cmp.flipped]}
        return out

    def _labels_by_name(self, ev: EmbeddedSet) -> tuple[list[int], torch.Tensor, dict[str, int]]:
        """(labels as indices of the current classes, which clips they are, {label: clips} of labels that are
        not a current class). Labels are matched by class name, never by position."""
        n = self.current.num_classes
        if not ev.label_names:  # plain indices of the current class set
            if len(ev) and int(ev.labels.max()) >= n:
                raise DataError(f"the evaluation set has labels up to {int(ev.labels.max())}; the class set has {n}")
            return ev.labels.tolist(), torch.arange(len(ev)), {}
        index = {c.lower(): i for i, c in enumerate(self.current.classes)}
        labels, keep, unmatched = [], [], {}
        for k, name in enumerate(ev.label_names):
            i = index.get(name.lower())
            if i is None:
                unmatched[name] = unmatched.get(name, 0) + 1
            else:
                labels.append(i)
                keep.append(k)
        return labels, torch.as_tensor(keep, dtype=torch.long), unmatched

    def rescore(self) -> dict:
        return {"clips": self.score_clips(), "evaluation": self.evaluate(), "flags": self.flags(),
                "text_encodings": self.scorer.tally.encoded}

    # --- generation ------------------------------------------------------------------------------
    def generate(self, style: str = "dferclip", *, only: Optional[Sequence[str]] = None, replace: bool = True,
                 **llm_kwargs):
        """LLM descriptions for all classes (or ``only`` these); they replace (or are added to) the current
        ones and the result becomes current. Returns the :class:`dferclip.llm.Generation`."""
        from .text.llm import generate

        gen = generate(self.current.classes, style, only=only, reserved_tokens=self.reserved_tokens(), **llm_kwargs)
        new = [list(d) for d in self.current.descriptions]
        for cls, descs in zip(gen.classes, gen.descriptions):
            i = self.current.classes.index(cls)
            new[i] = list(descs) if replace else new[i] + [d for d in descs if d not in new[i]]
        prov = dict(self.current.provenance) | gen.provenance
        self.edit(self.current.with_descriptions(new, provenance=prov))
        return gen
