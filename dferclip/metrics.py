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
