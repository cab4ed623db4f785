"""UAR, WAR, per-class recall and the confusion matrix, as the DFER papers compute them.

WAR = overall accuracy; UAR = mean per-class recall over the classes present in the labels
(the official code takes the diagonal of sklearn's row-normalised confusion matrix).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import DataError


@dataclass
class Metrics:
    uar: float  # percent
    war: float  # percent
    recall: list  # per class, percent; NaN for classes absent from the labels
    confusion: np.ndarray  # (C, C) counts, rows = true class, columns = predicted
    n: int

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict:
        names = list(class_names) if class_names is not None else list(range(len(self.recall)))
        return {
            "uar": self.uar, "war": self.war, "n": self.n,
            "recall": {str(c): (None if np.isnan(r) else r) for c, r in zip(names, self.recall)},
            "confusion": self.confusion.tolist(),
        }


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    for name, y in (("true", y_true), ("predicted", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):  # a -1 would land in the last class
            raise DataError(f"{name} labels must lie in 0..{num_classes - 1}; found {int(y.min())}..{int(y.max())}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> Metrics:
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError("need equally many true and predicted labels, at least one")
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, np.diag(cm) / support, np.nan) * 100
    return Metrics(
        uar=float(np.nanmean(recall)),
        war=float(np.trace(cm) / cm.sum() * 100),
        recall=[float(r) for r in recall],
        confusion=cm,
        n=int(y_true.size),
    )


# --- comparing two predictors on the same clips ---------------------------------------------------------
SMALL_CLASS = 5  # clips a class needs before resampling within it says much about its spread
@dataclass
class McNemar:
    """Exact McNemar test on the clips whose correctness differs: ``a_only`` right only under A, ``b_only``
    right only under B; ``p`` two-sided, from the binomial test of b_only out of a_only + b_only at 1/2."""
    a_only: int
    b_only: int
    p: float


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    from scipy.stats import binomtest

    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("McNemar needs the same clips under both predictors")
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(b_only, n, 0.5, alternative="two-sided").pvalue)
    return McNemar(a_only, b_only, p)


@dataclass
class Interval:
    estimate: float  # on the clips themselves
    low: float
    high: float

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass
class PairedComparison:
    """Two predictors on the same labelled clips: each one's metrics, the differences B - A with paired
    bootstrap intervals (clips resampled within their class, so every class keeps its count), and McNemar."""
    a: Metrics
    b: Metrics
    uar_diff: Interval  # percentage points, B - A
    war_diff: Interval
    uar_a: Interval
    uar_b: Interval
    war_a: Interval
    war_b: Interval
    mcnemar: McNemar
    flipped: list  # clip indices whose prediction differs between A and B
    confidence: float
    resamples: int
    seed: int
    small_classes: list  # classes with fewer than SMALL_CLASS clips: resampling within them shows little spread

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict:
        iv = {k: getattr(self, k).to_dict() for k in ("uar_a", "uar_b", "war_a", "war_b", "uar_diff", "war_diff")}
        names = list(class_names) if class_names is not None else None
        return {"a": self.a.to_dict(class_names), "b": self.b.to_dict(class_names), **iv,
                "small_classes": [names[c] if names else c for c in self.small_classes],
                "mcnemar": {"a_only": self.mcnemar.a_only, "b_only": self.mcnemar.b_only, "p": self.mcnemar.p},
                "flipped": list(self.flipped), "confidence": self.confidence, "resamples": self.resamples,
                "seed": self.seed}


def stratified_bootstrap(y_true: Sequence[int], correct: dict[str, Sequence[bool]], num_classes: int, *,
                         resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """UAR and WAR (percent) of each predictor over ``resamples`` paired resamplings of the clips, each class's
    clips drawn with replacement within the class (every resample keeps the class counts, so UAR is always
    over the same classes); one draw serves every predictor, so their differences are paired.
    Returns {name: {"uar": (R,), "war": (R,)}}."""
    y = np.asarray(y_true, dtype=np.int64)
    ok = {k: np.asarray(v, dtype=np.float64) for k, v in correct.items()}
    rng = np.random.default_rng(seed)
    present = [c for c in range(num_classes) if (y == c).any()]
    recall = {k: np.zeros((resamples, len(present))) for k in ok}
    hits = {k: np.zeros(resamples) for k in ok}
    for j, c in enumerate(present):
        members = np.flatnonzero(y == c)
        draw = members[rng.integers(0, len(members), size=(resamples, len(members)))]
        for k, v in ok.items():
            picked = v[draw]
            recall[k][:, j] = picked.mean(axis=1)
            hits[k] += picked.sum(axis=1)
    return {k: {"uar": recall[k].mean(axis=1) * 100, "war": hits[k] / len(y) * 100} for k in ok}


def compare_predictions(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int], num_classes: int, *,
                        confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> PairedComparison:
    """A and B on the same clips: metrics, paired stratified-bootstrap percentile intervals (seeded), McNemar."""
    y, a, b = (np.asarray(v, dtype=np.int64) for v in (y_true, pred_a, pred_b))
    if not (y.shape == a.shape == b.shape) or y.size == 0:
        raise ValueError("need the same clips, at least one, under both predictors")
    ma, mb = compute_metrics(y, a, num_classes), compute_metrics(y, b, num_classes)
    boot = stratified_bootstrap(y, {"a": a == y, "b": b == y}, num_classes, resamples=resamples, seed=seed)
    q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]

    def interval(estimate: float, samples: np.ndarray) -> Interval:
        low, high = np.percentile(samples, q)
        return Interval(float(estimate), float(low), float(high))

    return PairedComparison(
        a=ma, b=mb,
        uar_diff=interval(mb.uar - ma.uar, boot["b"]["uar"] - boot["a"]["uar"]),
        war_diff=interval(mb.war - ma.war, boot["b"]["war"] - boot["a"]["war"]),
        uar_a=interval(ma.uar, boot["a"]["uar"]), uar_b=interval(mb.uar, boot["b"]["uar"]),
        war_a=interval(ma.war, boot["a"]["war"]), war_b=interval(mb.war, boot["b"]["war"]),
        mcnemar=mcnemar_exact(a == y, b == y), flipped=[int(i) for i in np.flatnonzero(a != b)],
        confidence=confidence, resamples=resamples, seed=seed,
        small_classes=[c for c in range(num_classes) if 0 < (y == c).sum() < SMALL_CLASS])
