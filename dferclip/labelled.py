"""Labelled clip sets, for evaluating description sets: read (a ``path,label`` CSV, a CSV uploaded with its
clips, a local ``datasets`` folder) and embedded once per clip (:class:`EmbeddedSet`, cached by file content).

Labels are matched by class name; 0-based numbers only index a built-in class set. The workbench
(:mod:`dferclip.workbench`) scores its description sets on an :class:`EmbeddedSet`.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch

from . import pacing
from .errors import DataError, DferclipError
from .scoring import VideoEmbeddingCache, file_digest

log = logging.getLogger(__name__)


@dataclass
class LabelledClip:
    path: str
    label: int  # index into the class set the labels were read with
    label_name: str = ""  # the class NAME: what evaluation maps by (a class set may change after loading)


def label_index(value, classes: Sequence[str], where: str, numeric: bool = True) -> int:
    """A label's index in ``classes``: by class name (any case), or a 0-based index when ``numeric`` (only
    for the class set the indices were written for: a built-in one, never custom classes)."""
    text = str(value).strip()
    lowered = [c.lower() for c in classes]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    try:
        i = int(text)
    except ValueError:
        raise DataError(f"{where}: label {text!r} is neither a class ({', '.join(classes)}) nor an index") from None
    if not numeric:
        raise DataError(f"{where}: label {i} is a number, which only indexes a built-in class set; with these "
                        f"classes ({', '.join(classes)}) write class names")
    if not 0 <= i < len(classes):
        raise DataError(f"{where}: label index {i} outside 0..{len(classes) - 1}")
    return i


def labelled(path: str, value, classes: Sequence[str], where: str, numeric: bool = True) -> LabelledClip:
    i = label_index(value, classes, where, numeric)
    return LabelledClip(path, i, classes[i])


def read_labels_csv(csv_path: str | Path, classes: Sequence[str], folder: str | Path | None = None,
                    numeric: bool = True) -> list[LabelledClip]:
    """``path,label`` rows (header optional); labels are class names or 0-based indices; paths are relative to
    ``folder`` (default: the CSV's folder)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"no such labels file: {csv_path}")
    base = Path(folder) if folder else csv_path.parent
    clips, missing = [], []
    for n, name, label in labels_csv_rows(csv_path):
        p = Path(name)
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            missing.append(str(p))
            continue
        clips.append(labelled(str(p), label, classes, f"{csv_path.name} line {n}", numeric))
    if missing:
        log.warning("%d listed clips are missing, e.g. %s", len(missing), missing[0])
    if not clips:
        raise DataError(f"{csv_path.name} lists no existing clips" + (f" (missing: {missing[0]} ...)" if missing else ""))
    return clips


MAX_LABELS_CSV_BYTES = 4 << 20


def labels_csv_rows(csv_path: str | Path) -> Iterator[tuple[int, str, str]]:
    """(line number, path, label) of a ``path,label`` CSV (header, blank and ``#`` lines skipped)."""
    csv_path = Path(csv_path)
    if csv_path.stat().st_size > MAX_LABELS_CSV_BYTES:
        raise DataError(f"{csv_path.name} is larger than {MAX_LABELS_CSV_BYTES >> 20} MB")
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{csv_path.name} is not UTF-8 text") from None
    for n, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if n == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
            continue
        if len(row) < 2:
            raise DataError(f"{csv_path.name} line {n}: expected 'path,label'")
        yield n, row[0].strip(), row[1]


def read_uploaded_labels(csv_path: str | Path, uploaded: dict[str, str], classes: Sequence[str],
                         max_clips: int, *, allow_local_paths: bool = False, numeric: bool = True
                         ) -> list[LabelledClip]:
    """A labels CSV uploaded with its clips (``uploaded``: file name -> its upload path). Rows name uploaded
    files by name; a row naming anything else is an error that says nothing about the server's disk, unless
    ``allow_local_paths`` (the app's local mode), where it may be a path on this machine."""
    csv_name = Path(csv_path).name
    clips = []
    for n, name, label in labels_csv_rows(csv_path):
        if name in uploaded:
            path = uploaded[name]
        elif allow_local_paths and Path(name).is_file():
            path = name
        else:
            raise DataError(f"{csv_name} line {n}: {name[:80]!r} is not one of the uploaded clips; the CSV may "
                            "only name files uploaded with it, by file name")
        clips.append(labelled(path, label, classes, f"{csv_name} line {n}", numeric))
        if len(clips) > max_clips:
            raise DataError(f"more than {max_clips} clips: an evaluation set here holds at most {max_clips}")
    if not clips:
        raise DataError(f"{csv_name} lists no clips")
    return clips


def read_hf_dataset(path: str | Path, classes: Sequence[str], split: Optional[str] = None, numeric: bool = True
                    ) -> list[LabelledClip]:
    """A local ``datasets`` dataset (``save_to_disk`` folder) with a video path column and a label column."""
    try:
        import datasets
    except ImportError:
        raise DataError("reading a datasets dataset needs the 'datasets' package: pip install datasets") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"cannot load the dataset at {path}: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        split = split or next(iter(ds))
        if split not in ds:
            raise DataError(f"no split {split!r}; splits: {', '.join(ds)}")
        ds = ds[split]
    path_col = next((c for c in ("path", "video", "file", "video_path") if c in ds.column_names), None)
    if path_col is None or "label" not in ds.column_names:
        raise DataError(f"the dataset needs a 'label' column and one of path/video/file; has {ds.column_names}")
    feature = ds.features["label"]
    names = getattr(feature, "names", None)
    clips, unlabelled = [], 0
    for i, row in enumerate(ds):
        value = row[path_col]
        p = value.get("path") if isinstance(value, dict) else value
        if names and isinstance(row["label"], int) and row["label"] < 0:  # ClassLabel's "no label" (-1)
            unlabelled += 1
            continue
        label = names[row["label"]] if names else row["label"]
        clips.append(labelled(str(p), label, classes, f"row {i}", numeric))
    if unlabelled:
        log.warning("%d rows without a label (-1) skipped", unlabelled)
    if not clips:
        raise DataError(f"the dataset at {path} has no labelled rows")
    return clips


@dataclass
class EmbeddedSet:
    """A labelled set's cached video embeddings (N, D) for both scoring modes."""

    paths: list[str]
    labels: torch.Tensor
    learned: torch.Tensor
    zero_shot: torch.Tensor
    failed: list = field(default_factory=list)  # (path, message) of clips that could not be read
    label_names: list = field(default_factory=list)  # per clip; empty: ``labels`` index the current class set
    model_key: str = ""  # which model embedded it (the app drops the set when the model changes)

    def for_mode(self, mode: str) -> torch.Tensor:
        return self.learned if mode == "learned" else self.zero_shot

    def __len__(self) -> int:
        return len(self.paths)


def default_ingest(model, limits=None) -> tuple[Callable[[str], torch.Tensor], dict]:
    """Ingestion of a file into model input (face crops, the model's sampler) and its settings for cache keys.
    ``limits`` (``dferclip.video.decode.Limits``) bound each file; they decide only whether it is read, so
    they are not part of the settings."""
    from .video.ingest import ingest

    cfg = model.input_config

    def load(path: str) -> torch.Tensor:
        return (ingest(path, cfg, limits=limits) if limits is not None else ingest(path, cfg)).video

    return load, {"ingest": "dferclip.ingest", "input": dataclasses.asdict(cfg)}


def embed_clips(model, clips: Sequence[LabelledClip], cache: VideoEmbeddingCache, *,
                ingest_fn: Optional[Callable[[str], torch.Tensor]] = None, ingest_settings: Optional[dict] = None,
                progress: Optional[Callable[[int, int, str], None]] = None, limits=None) -> EmbeddedSet:
    """Embeddings of every clip, each computed once per (model, file content, ingestion settings); ``limits``
    bound each file read by the default ingestion."""
    if ingest_fn is None:
        ingest_fn, ingest_settings = default_ingest(model, limits)
    settings = hashlib.sha256(json.dumps(ingest_settings or {}, sort_keys=True, default=str).encode()).hexdigest()[:16]
    paths, labels, names, learned, zero, failed = [], [], [], [], [], []
    for i, clip in enumerate(clips):
        pacing.checkpoint()
        if progress:
            progress(i, len(clips), clip.path)
        try:
            key = f"{file_digest(clip.path)}:{settings}"
            emb = cache.get(model, key=key, load_video=lambda p=clip.path: ingest_fn(p))
        except (DferclipError, OSError) as e:
            failed.append((clip.path, str(e)))
            log.warning("skipping %s: %s", clip.path, e)
            continue
        paths.append(clip.path)
        labels.append(clip.label)
        names.append(clip.label_name)
        learned.append(emb.learned)
        zero.append(emb.zero_shot)
    if progress:
        progress(len(clips), len(clips), "")
    if not paths:
        raise DataError(f"none of the {len(clips)} clips could be read; first problem: {failed[0][1] if failed else '-'}")
    return EmbeddedSet(paths, torch.as_tensor(labels, device="cpu"), torch.stack(learned), torch.stack(zero), failed,
                       names if all(names) else [])
