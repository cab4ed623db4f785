"""Evaluation on labelled sets: UAR, WAR, per-class recall, confusion matrix, 5-fold means.

The numbers come from :func:`dferclip.metrics.compute_metrics`, as in the official script (WAR = accuracy,
UAR = mean per-class recall); fold aggregation is the plain mean over folds, as the official 5-fold driver
prints it. Video embeddings can be computed once (:func:`encode_dataset`) and re-scored against any class
embeddings (:func:`metrics_from_embeddings`), which is what the workbench does when descriptions change.

Models with several input streams (FineCLIPER) provide ``wrap_dataset``: :func:`wrap_for_model` turns a clip
dataset into one whose items are input dicts (video, face-analysis renders, caption tokens); batches are
moved to the device with :func:`to_device`.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..files import atomic_write_with
from ..metrics import Metrics, compute_metrics
from ..runtime import autocast, mixed_precision_dtype, to_device
from ..workers import sigchld_kept

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: Metrics
    class_names: list
    labels: np.ndarray
    predictions: np.ndarray

    def to_dict(self) -> dict:
        return self.metrics.to_dict(self.class_names) | {"classes": list(self.class_names)}


def open_captions(path: str | Path):
    """A :class:`dferclip.captions.CaptionStore` from a caption file, or from a folder of them (merged)."""
    from .captions import CaptionError, CaptionStore

    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.json"))
        if not files:
            raise CaptionError(f"no caption files (*.json) in {p}")
        store = CaptionStore(files[0])
        for f in files[1:]:
            store.items |= CaptionStore(f).items
        return store
    if not p.is_file():
        raise CaptionError(f"no caption file at {p} (dferclip.captions.caption_clips writes one)")
    return CaptionStore(p)


def wrap_for_model(model, dataset, *, captions=None, face_cache=None):
    """The dataset as the model takes it (``model.wrap_dataset``): FineCLIPER gets ``(input dict, label)``
    items with every stream; ``captions`` is a CaptionStore or a path, ``face_cache`` an AnalysisCache or a
    folder. Other models, and datasets that are not plain clip datasets, are returned as they are."""
    from .data import ClipDataset

    takes_captions = model.uses_captions or (getattr(model, "trains_on_captions", False)
                                             and getattr(dataset, "train", False))  # EmoCLIP's training clips
    if captions is not None and not takes_captions:
        log.warning("captions given, but this %s model (streams %s) has no caption stream: ignored",
                    model.family, ", ".join(model.streams))
        captions = None
    if not isinstance(dataset, ClipDataset):
        return dataset
    if isinstance(captions, (str, Path)):
        captions = open_captions(captions)
    if isinstance(face_cache, (str, Path)):
        from ..video.face_analysis import AnalysisCache

        face_cache = AnalysisCache(face_cache)
    return model.wrap_dataset(dataset, captions=captions, analysis_cache=face_cache)


def caption_coverage(dataset) -> Optional[dict]:
    """``{"clips", "without_caption"}`` of a dataset wrapped for a model with a caption stream; else None."""
    if not getattr(dataset, "uses_captions", False):
        return None
    missing = len(dataset) if dataset.captions is None else len(dataset.missing_captions)
    return {"clips": len(dataset), "without_caption": missing}


def worker_context(dataset, workers: int) -> Optional[str]:
    """The DataLoader start method: "spawn" when workers run face analysis and MediaPipe is already loaded
    in this process (its graphs do not survive fork: a forked worker crashes or hangs), else the default."""
    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    if workers > 0 and getattr(base, "needs_mid", False) and "mediapipe" in sys.modules:
        log.info("DataLoader workers start with spawn: MediaPipe is loaded in this process")
        return "spawn"
    return None


@torch.no_grad()
def encode_dataset(model, dataset, *, batch_size: int = 16, device="cpu", workers: int = 0, amp: bool = False,
                   indices: Optional[Sequence[int]] = None, progress=None) -> tuple[torch.Tensor, np.ndarray]:
    """Video embeddings (N, D) (float32, on CPU, not normalised) and labels of a dataset (or a subset)."""
    device = torch.device(device)
    dtype = mixed_precision_dtype(device, amp)
    data = Subset(dataset, list(indices)) if indices is not None else dataset
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", multiprocessing_context=worker_context(data, workers))
    was_training = model.training
    model.eval()
    embs, labels = [], []
    try:
        with sigchld_kept():
            for inputs, label in (progress(loader) if progress else loader):
                with autocast(device, dtype):
                    embs.append(model.encode_video(to_device(inputs, device, non_blocking=True)).float().cpu())
                labels.append(label.numpy())
    finally:
        model.train(was_training)
    if not embs:
        return torch.empty(0, model.embed_dim), np.empty(0, dtype=np.int64)
    return torch.cat(embs), np.concatenate(labels).astype(np.int64)


@torch.no_grad()
def predict_from_embeddings(model, video_embeddings: torch.Tensor, class_embeddings=None) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        classes = model.class_embeddings() if class_embeddings is None else class_embeddings
        logits = model.score(video_embeddings.to(classes.device, classes.dtype), classes)
    finally:
        model.train(was_training)
    return logits.argmax(dim=-1).cpu().numpy()


def metrics_from_embeddings(model, video_embeddings: torch.Tensor, labels, class_embeddings=None) -> Metrics:
    """Re-score cached video embeddings against the model's (or given) class embeddings."""
    n = model.num_classes if class_embeddings is None else class_embeddings.shape[0]
    return compute_metrics(labels, predict_from_embeddings(model, video_embeddings, class_embeddings), n)


def evaluate_model(model, dataset, *, batch_size: int = 16, device="cpu", workers: int = 0, amp: bool = False,
                   progress=None, captions=None, face_cache=None) -> EvalResult:
    """Metrics of a model on a dataset (a plain clip dataset is wrapped for multi-stream models, with
    ``captions`` and ``face_cache`` as in :func:`wrap_for_model`)."""
    dataset = wrap_for_model(model, dataset, captions=captions, face_cache=face_cache)
    emb, labels = encode_dataset(model, dataset, batch_size=batch_size, device=device, workers=workers, amp=amp,
                                 progress=progress)
    preds = predict_from_embeddings(model, emb.to(device))
    return EvalResult(compute_metrics(labels, preds, model.num_classes), model.class_names, labels, preds)


def aggregate_folds(fold_results: Sequence[dict]) -> dict:
    """Mean (and spread) of UAR and WAR over folds, as the official 5-fold driver reports them."""
    uar = np.array([r["uar"] for r in fold_results])
    war = np.array([r["war"] for r in fold_results])
    return {"folds": len(fold_results), "uar": float(uar.mean()), "war": float(war.mean()),
            "uar_std": float(uar.std()), "war_std": float(war.std())}


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: str | Path,
                   title: str = "") -> Optional[Path]:
    """Row-normalised confusion matrix as a PNG; None (with a log note) when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed: confusion-matrix plot skipped")
        return None
    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{100 * norm[i, j]:.0f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def parse_folds(text: Optional[str]) -> Optional[list[int]]:
    """"1-5" or "1,3,5" -> [1, ...]; None/"" -> None."""
    if not text:
        return None
    folds: list[int] = []
    for part in str(text).split(","):
        a, sep, b = part.strip().partition("-")
        folds += list(range(int(a), int(b) + 1)) if sep else [int(a)]
    return folds


def evaluate_sources(checkpoint: str, data: str, *, folds: Optional[Sequence[int]] = None, device="cpu",
                     batch_size: int = 16, workers: int = 0, amp: bool = False, descriptions=None,
                     label_base: int = 0, root=None, path_map=None, plot_dir: str | Path | None = None,
                     progress=None, captions: Optional[str] = None, face_cache: Optional[str] = None) -> dict:
    """Evaluate a model (a ``load_model`` source) on a dataset spec; with ``folds``, ``{fold}`` in both is
    replaced by each fold number and the fold means are added. Returns a JSON-ready dict.

    FineCLIPER models: ``captions`` (a caption file or folder, may hold ``{fold}``) feeds the caption
    stream, ``face_cache`` (a folder) keeps the face analysis of each clip for later runs (default: none)."""
    from ..weights.checkpoints import load_model
    from .data import open_dataset

    def one(ck: str, spec: str, tag: str, caps: Optional[str]) -> dict:
        model = load_model(ck, device=device, descriptions=descriptions)
        ds = open_dataset(spec, model.input_config, class_names=model.class_names, label_base=label_base,
                          root=root, path_map=path_map)
        ds = wrap_for_model(model, ds, captions=caps, face_cache=face_cache)
        res = evaluate_model(model, ds, batch_size=batch_size, device=device, workers=workers, amp=amp,
                             progress=progress)
        out = {"checkpoint": ck, "data": spec, "weights": model.weights_info} | res.to_dict()
        coverage = caption_coverage(ds)
        if coverage is not None:
            out["captions"] = coverage
        if ds.report is not None and ds.report.problems:
            out["data_problems"] = ds.report.summary()
        if plot_dir is not None:
            png = plot_confusion(res.metrics.confusion, res.class_names, Path(plot_dir) / f"confusion{tag}.png",
                                 f"{Path(spec).name}: UAR {res.metrics.uar:.2f}  WAR {res.metrics.war:.2f}")
            out["confusion_plot"] = str(png) if png else None
        return out

    if not folds:
        return one(checkpoint, data, "", captions)
    results = [one(checkpoint.replace("{fold}", str(k)), data.replace("{fold}", str(k)), f"-fold{k}",
                   captions.replace("{fold}", str(k)) if captions else None) | {"fold": k}
               for k in folds]
    return {"folds": results, "mean": aggregate_folds(results)}
