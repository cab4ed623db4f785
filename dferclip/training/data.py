"""Datasets for training and evaluation, as the official DFER-CLIP recipe reads them.

Sources:
- official annotation lists, one clip per line: ``<frame_dir> <num_frames> <label>`` (DFEW ``set_1..5``,
  FERV39k, MAFW ``set_1..5``). The official lists hold **0-based** labels (the DFEW CSV label minus 1, see
  the official ``annotation/preprocess_annotation.py``); lists made from the raw DFEW CSVs are 1-based and
  need ``label_base=1``;
- folders of face-crop frames (sorted image files), one folder per clip;
- raw videos, turned once into face-crop frame folders by :func:`ingest_videos` (``dferclip.ingest``);
- Hugging Face ``datasets`` (Hub or local files) with a column of frame lists or video paths.

Frame sampling: TSN-style random offsets per segment for training, the middle frame of each of
``num_frames`` segments for testing, short clips padded with their last frame. Training augmentations draw
one parameter set per clip, shared by all its frames. Pixels come out in [0, 1] and then go through the
model's ``InputConfig.normalize`` (a no-op in the official setting: no CLIP mean/std).

Missing folders, empty folders, bad lines and frame counts that differ from the list are collected in a
:class:`DataReport` and logged, not raised: the clip is dropped or its on-disk count is used.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.utils.data import Dataset

from ..config import InputConfig
from ..errors import DataError
from ..files import atomic_folder, atomic_write
from ..video.clips import (  # noqa: F401
    IMAGE_EXTENSIONS,
    SOURCE_KEY_FILE,
    VIDEO_EXTENSIONS,
    _natural_key,
    clip_key,
    list_frames,
)
from ..video.decode import sample_indices
from ..video.faces import RESIZE_FILTERS

log = logging.getLogger(__name__)



# --- annotation lists ------------------------------------------------------------------------
@dataclass
class ClipRecord:
    path: str  # frame folder
    num_frames: int  # as listed (-1: unknown); replaced by the on-disk count once listed
    label: int  # 0-based
    line: int = 0  # 1-based line in the list, 0 when not from a list
    frames: Optional[list] = field(default=None, repr=False)  # sorted frame files, once listed


@dataclass
class DataReport:
    """What was wrong with a dataset's list or its files (nothing here stops training)."""

    source: str = ""
    listed: int = 0
    bad_lines: list = field(default_factory=list)  # (line, text, reason)
    missing: list = field(default_factory=list)  # (line, path)
    empty: list = field(default_factory=list)  # (line, path)
    mismatched: list = field(default_factory=list)  # (line, path, listed, on_disk)
    notes: list = field(default_factory=list)

    @property
    def problems(self) -> int:
        return len(self.bad_lines) + len(self.missing) + len(self.empty) + len(self.mismatched)

    def summary(self) -> str:
        parts = [f"{self.source}: {self.listed} clips listed"]
        if self.bad_lines:
            parts.append(f"{len(self.bad_lines)} bad lines skipped (first: line {self.bad_lines[0][0]}: "
                         f"{self.bad_lines[0][2]})")
        if self.missing:
            parts.append(f"{len(self.missing)} frame folders missing, dropped (first: {self.missing[0][1]})")
        if self.empty:
            parts.append(f"{len(self.empty)} folders without frames, dropped (first: {self.empty[0][1]})")
        if self.mismatched:
            ln, p, a, b = self.mismatched[0]
            parts.append(f"{len(self.mismatched)} frame counts differ from the list, on-disk count used "
                         f"(first: {p}: listed {a}, found {b})")
        return "; ".join(parts + self.notes)

    def to_dict(self) -> dict:
        return {"source": self.source, "listed": self.listed, "bad_lines": self.bad_lines,
                "missing": self.missing, "empty": self.empty, "mismatched": self.mismatched,
                "notes": self.notes}


def _map_path(path: str, base: Path, path_map: dict) -> str:
    for old, new in (path_map or {}).items():
        if path.startswith(old):
            path = new + path[len(old):]
            break
    p = Path(path)
    return str(p if p.is_absolute() else base / p)


def read_annotation(list_file: str | Path, *, num_classes: Optional[int] = None, label_base: int = 0,
                    root: str | Path | None = None, path_map: Optional[dict] = None,
                    report: Optional[DataReport] = None) -> tuple[list[ClipRecord], DataReport]:
    """Parse an official-format list. Relative folders are resolved against ``root`` (default: the list's
    folder); ``path_map`` rewrites path prefixes, e.g. ``{"/data/EECS-IoannisLab/datasets": "/my/data"}``.
    Labels are shifted by ``label_base`` to 0-based and checked against ``num_classes``."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DataError(f"annotation list not found: {list_file}")
    report = report or DataReport(source=list_file.name)
    base = Path(root) if root is not None else list_file.parent
    records = []
    raw_labels = []
    for i, text in enumerate(list_file.read_text(errors="replace").splitlines(), 1):
        s = text.strip()
        if not s or s.startswith("#"):
            continue
        fields = s.rsplit(maxsplit=2)  # a folder name may contain spaces
        if len(fields) != 3:
            report.bad_lines.append((i, s[:200], "expected '<frame_dir> <num_frames> <label>'"))
            continue
        try:
            n, label = int(fields[1]), int(fields[2])
        except ValueError:
            report.bad_lines.append((i, s[:200], "frame count and label must be integers"))
            continue
        raw_labels.append(label)
        label -= label_base
        if n < 0 or label < 0 or (num_classes is not None and label >= num_classes):
            report.bad_lines.append((i, s[:200], f"label {label + label_base} or frame count {n} out of range"
                                     + (f" for {num_classes} classes" if num_classes else "")))
            continue
        records.append(ClipRecord(_map_path(fields[0], base, path_map), n, label, i))
    report.listed += len(records)
    if raw_labels and label_base == 0 and num_classes and min(raw_labels) >= 1 and max(raw_labels) == num_classes:
        report.notes.append(f"labels run 1..{num_classes}: this list looks 1-based (pass label_base=1)")
    return records, report


def check_frames(records: list[ClipRecord], report: DataReport) -> list[ClipRecord]:
    """List every clip's frames; drop missing or empty folders, use on-disk counts where they differ."""
    kept = []
    for r in records:
        try:
            frames = list_frames(r.path)
        except (FileNotFoundError, NotADirectoryError):
            report.missing.append((r.line, r.path))
            continue
        if not frames:
            report.empty.append((r.line, r.path))
            continue
        if r.num_frames >= 0 and len(frames) != r.num_frames:
            report.mismatched.append((r.line, r.path, r.num_frames, len(frames)))
        kept.append(replace(r, num_frames=len(frames), frames=frames))
    return kept


def write_annotation(records: Sequence[ClipRecord], list_file: str | Path) -> Path:
    """Write an official-format list (0-based labels)."""
    with atomic_write(list_file) as f:
        f.write("".join(f"{r.path} {r.num_frames} {r.label}\n" for r in records))
    return Path(list_file)


def scan_class_folders(root: str | Path, class_names: Sequence[str]) -> list[ClipRecord]:
    """``root/<class name>/<clip folder>/<frames>``: one record per clip folder (labels by class order)."""
    root = Path(root)
    index = {c.lower(): i for i, c in enumerate(class_names)}
    records = []
    for cdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if cdir.name.lower() not in index:
            raise DataError(f"{cdir} is not a class of {list(class_names)}")
        for clip in sorted((p for p in cdir.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name)):
            records.append(ClipRecord(str(clip), -1, index[cdir.name.lower()]))
    return records


# --- frame sampling --------------------------------------------------------------------------
def train_indices(n: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """TSN training rule: one random frame from each of ``num_segments`` equal segments of ``n // T``
    frames; clips shorter than ``num_segments`` use every frame, padded with the last."""
    avg = n // num_segments
    if avg > 0:
        return np.arange(num_segments) * avg + rng.integers(0, avg, size=num_segments)
    return np.pad(np.arange(n), (0, num_segments - n), mode="edge")


def middle_indices(n: int, num_segments: int) -> np.ndarray:
    """Official test rule (the app's sampler): the middle frame of each of ``num_segments`` segments,
    edge-padded when short."""
    return np.asarray(sample_indices(n, num_segments, "middle"))


# --- augmentation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Augment:
    """Clip-consistent training augmentation (one parameter set per clip). Presets: :data:`AUGMENT_PRESETS`."""

    brightness: float = 0.0  # factor ~ U(max(0, 1 - b), 1 + b)
    rotation: float = 0.0  # degrees ~ U(-r, r), PIL rotate (nearest, black corners)
    crop_area: tuple = (0.08, 1.0)  # random sized crop; None: plain resize
    crop_ratio: tuple = (3 / 4, 4 / 3)
    flip: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "Augment":
        d = dict(d)
        for k in ("crop_area", "crop_ratio"):
            if d.get(k) is not None:
                d[k] = tuple(float(v) for v in d[k])
        return cls(**d)

    def sample(self, rng: np.random.Generator, width: int, height: int, size: int) -> dict:
        """Draw one parameter set for a clip whose frames are ``width`` x ``height``."""
        p: dict = {}
        if self.brightness > 0:
            p["brightness"] = float(rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness))
        if self.rotation > 0:
            p["rotation"] = float(rng.uniform(-self.rotation, self.rotation))
        if self.crop_area is not None:
            p["crop"] = _sized_crop_box(rng, width, height, size, self.crop_area, self.crop_ratio)
        p["flip"] = bool(self.flip and rng.random() < 0.5)
        return p

    @staticmethod
    def apply(img: Image.Image, params: dict, size: int) -> Image.Image:
        if "brightness" in params:
            img = ImageEnhance.Brightness(img).enhance(params["brightness"])
        if "rotation" in params:
            img = img.rotate(params["rotation"])
        crop = params.get("crop")
        if crop is None:
            img = img.resize((size, size), Image.BILINEAR)
        elif crop[0] == "box":
            img = img.crop(crop[1]).resize((size, size), Image.BILINEAR)
        else:  # fallback: shorter side to size, then a random size x size crop
            _, (w, h), (x, y) = crop
            img = img.resize((w, h), Image.BILINEAR).crop((x, y, x + size, y + size))
        if params.get("flip"):
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return img


def _sized_crop_box(rng, width, height, size, area_range, ratio_range):
    """Inception-style crop as the official GroupRandomSizedCrop: 10 tries, then a scale + random crop."""
    area = width * height
    for _ in range(10):
        target = rng.uniform(*area_range) * area
        ratio = rng.uniform(*ratio_range)
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if rng.random() < 0.5:
            w, h = h, w
        if w <= width and h <= height:
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return ("box", (x, y, x + w, y + h))
    if width <= height:
        sw, sh = size, int(size * height / width)
    else:
        sw, sh = int(size * width / height), size
    return ("fallback", (sw, sh), (int(rng.integers(0, sw - size + 1)), int(rng.integers(0, sh - size + 1))))


AUGMENT_PRESETS = {
    "dfew": Augment(brightness=0.5),
    "ferv39k": Augment(rotation=4.0),
    "mafw": Augment(),
    "none": Augment(crop_area=None, flip=False),
}


def augment_for(spec) -> Augment:
    """An :class:`Augment` from a preset name (DFEW, FERV39K, MAFW, none), a dict or an Augment."""
    if isinstance(spec, Augment):
        return spec
    if isinstance(spec, dict):
        return Augment.from_dict(spec)
    key = str(spec).lower()
    if key not in AUGMENT_PRESETS:
        raise DataError(f"unknown augmentation {spec!r}; presets: {', '.join(AUGMENT_PRESETS)}")
    return AUGMENT_PRESETS[key]


def clip_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one clip in one epoch: independent of workers, ranks and resumption."""
    return np.random.default_rng([seed, epoch, index])


def _rgb(frame) -> Image.Image:
    """An image file (path) or a PIL image, as RGB."""
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    with Image.open(frame) as im:
        return im.convert("RGB")


def frames_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL RGB frames -> (T, 3, H, W) float in [0, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255)


# --- datasets --------------------------------------------------------------------------------
class ClipDataset(Dataset):
    """Clips from frame folders. ``train=True``: TSN sampling + augmentation; else middle frames + resize.

    Items are ``(video (T, 3, S, S), label)``, already passed through ``input_config.normalize``. Random
    choices come from :func:`clip_rng` (seed, epoch, index): call :meth:`set_epoch` each epoch.
    """

    def __init__(self, records: Sequence[ClipRecord], input_config: InputConfig = InputConfig(), *,
                 train: bool = False, augment: Augment | str | dict = "none", seed: int = 1,
                 report: Optional[DataReport] = None, class_names: Optional[Sequence[str]] = None):
        self.records = list(records)
        self.input_config = input_config
        self.train = train
        self.augment = augment_for(augment)
        self.seed = seed
        self.epoch = 0
        self.report = report
        self.class_names = list(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def indices_for(self, index: int, n: int) -> np.ndarray:
        t = self.input_config.num_frames
        if self.train:
            return train_indices(n, t, clip_rng(self.seed, self.epoch, index))
        return np.asarray(sample_indices(n, t, self.input_config.sampler))  # the model's test sampler

    def sample_frames(self, index: int, frames: Sequence, where: str) -> list[Image.Image]:
        """The clip's sampled frames as RGB images; ``frames`` are files or images (each opened once)."""
        if not len(frames):
            raise DataError(f"no frames in {where}")
        idx = np.minimum(self.indices_for(index, len(frames)), len(frames) - 1)
        cache: dict = {}
        for i in idx:
            if i not in cache:
                cache[i] = _rgb(frames[i])
        return [cache[i] for i in idx]

    def load_frames(self, index: int) -> list[Image.Image]:
        r = self.records[index]
        return self.sample_frames(index, r.frames if r.frames is not None else list_frames(r.path), r.path)

    def transform(self, index: int, images: list[Image.Image]) -> torch.Tensor:
        size = self.input_config.image_size
        if self.train:
            w, h = images[0].size
            params = self.augment.sample(clip_rng(self.seed, self.epoch, index + (1 << 40)), w, h, size)
            images = [self.augment.apply(im, params, size) for im in images]
        else:
            resample = getattr(Image, RESIZE_FILTERS[self.input_config.resize])  # the model's test resize
            images = [im.resize((size, size), resample) for im in images]
        return self.input_config.normalize(frames_to_tensor(images))

    def __getitem__(self, index: int):
        return self.transform(index, self.load_frames(index)), self.records[index].label


def load_annotation_dataset(list_file: str | Path, input_config: InputConfig = InputConfig(), *,
                            train: bool = False, augment="none", seed: int = 1, num_classes: Optional[int] = None,
                            label_base: int = 0, root=None, path_map=None, check: bool = True,
                            class_names=None) -> ClipDataset:
    """An official-format list as a dataset; with ``check`` (default) every folder is listed up front and
    problems are logged as one summary."""
    records, report = read_annotation(list_file, num_classes=num_classes, label_base=label_base,
                                      root=root, path_map=path_map)
    if check:
        records = check_frames(records, report)
    if report.problems or report.notes:
        log.warning("%s", report.summary())
    if not records:
        raise DataError(f"{list_file}: no usable clips ({report.summary()})")
    return ClipDataset(records, input_config, train=train, augment=augment, seed=seed, report=report,
                       class_names=class_names)


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): ``fraction`` of each class (at least one of classes with two or more clips)."""
    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(fraction * len(idx)))
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val += idx[:k].tolist()
    val_set = set(val)
    return [i for i in range(len(labels)) if i not in val_set], sorted(val)


def subset(ds: ClipDataset, indices: Sequence[int], *, train: Optional[bool] = None) -> ClipDataset:
    """The clips at ``indices``, as a dataset of the same kind (an HF subset still reads its rows)."""
    out = copy.copy(ds)
    out.records = [ds.records[i] for i in indices]
    out.train = ds.train if train is None else train
    return out


# --- raw videos through the ingestion pipeline -------------------------------------------------


def _frame_dir_name(video: Path, settings: str) -> str:
    """The cache folder of a video: its place, size and modification time (a replaced file gets a new folder)
    and the ingestion settings."""
    st = video.stat()
    ident = f"{video.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{settings}"
    return f"{video.stem}-{hashlib.sha1(ident.encode()).hexdigest()[:10]}"


def ingest_videos(videos: Sequence[tuple[str | Path, int]], out_dir: str | Path, *, image_size: int = 224,
                  max_frames: int = 64, detector=None, fallback: str = "center") -> tuple[Path, DataReport]:
    """Run each video once through ``dferclip.ingest`` (decode, face tracking, square crops) and keep the
    crops as a frame folder; returns an official-format list of them. A video already extracted with the same
    settings, and not changed since, is reused. Videos that cannot be read are reported and skipped."""
    from ..errors import DferclipError
    from ..video.ingest import ingest

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = DataReport(source=str(out_dir))
    records = []
    settings = f"size={image_size} frames={max_frames} fallback={fallback}"
    for i, (video, label) in enumerate(videos, 1):
        video = Path(video)
        try:
            folder = out_dir / _frame_dir_name(video, settings)
            frames = list_frames(folder) if folder.is_dir() else []
            if not frames:
                res = ingest(video, InputConfig(num_frames=max_frames, image_size=image_size),
                             detector=detector, fallback=fallback)
                frames = _write_frame_folder(folder, _distinct_frames(res), clip_key(video))
        except DferclipError as e:
            report.bad_lines.append((i, str(video), str(e)))
            continue
        records.append(ClipRecord(str(folder), len(frames), int(label), i))
    report.listed = len(records)
    return write_annotation(records, out_dir / "annotation.txt"), report


def _write_frame_folder(folder: Path, crops: list, key: str) -> list[str]:
    """The crops as a frame folder, written whole into a fresh temporary folder and renamed into place: a
    folder is complete or absent, and what an interrupted run left behind is never reused."""
    with atomic_folder(folder, overwrite=True) as tmp:
        for k, crop in enumerate(crops):
            crop.save(tmp / f"{k:05d}.jpg", quality=95)
        # the clip's identity is its video's content, whatever crop size or cache folder (captions use it)
        (tmp / SOURCE_KEY_FILE).write_text(key + "\n")
    return list_frames(folder)


def _distinct_frames(res) -> list:
    """The ingested crops without the repeats that padding a short video adds."""
    seen, kept = set(), []
    for meta, crop in zip(res.frames, res.crops):
        key = getattr(meta, "index", None) if not isinstance(meta, dict) else meta.get("index")
        if key is None or key not in seen:
            seen.add(key)
            kept.append(crop)
    return kept


def scan_video_folders(root: str | Path, class_names: Sequence[str]) -> list[tuple[Path, int]]:
    """``root/<class name>/*.mp4`` (any common container) -> (video, label) pairs."""
    root = Path(root)
    index = {c.lower(): i for i, c in enumerate(class_names)}
    pairs = []
    for cdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):  # not caches
        if cdir.name.lower() not in index:
            raise DataError(f"{cdir} is not a class of {list(class_names)}")
        pairs += [(v, index[cdir.name.lower()]) for v in sorted(cdir.iterdir())
                  if v.suffix.lower() in VIDEO_EXTENSIONS]
    return pairs


# --- Hugging Face datasets ---------------------------------------------------------------------
class HFClipDataset(ClipDataset):
    """Rows of a ``datasets.Dataset`` with a list of frames (images) or a frame-folder path, and a label.

    Sampling and augmentation are those of :class:`ClipDataset`.
    """

    def __init__(self, hf_dataset, input_config: InputConfig = InputConfig(), *, frames_column: str = "frames",
                 label_column: str = "label", num_classes: Optional[int] = None, source: str = "", **kw):
        if frames_column not in hf_dataset.column_names or label_column not in hf_dataset.column_names:
            raise DataError(f"dataset needs columns {frames_column!r} and {label_column!r}; "
                            f"it has {hf_dataset.column_names}")
        names = getattr(hf_dataset.features[label_column], "names", None)
        num_classes = len(names) if names else num_classes
        report = DataReport(source=source or "Hugging Face dataset")
        records = []  # a record's ``line`` is its row in the dataset
        for i, lab in enumerate(hf_dataset[label_column]):
            if lab is None or int(lab) < 0 or (num_classes is not None and int(lab) >= num_classes):
                why = "no label (ClassLabel -1)" if lab is None or int(lab) == -1 else "label out of range"
                report.bad_lines.append((i, f"row {i}: label {lab}", why))
                continue
            records.append(ClipRecord(f"row {i}", -1, int(lab), i))
        report.listed = len(records)
        if report.problems:
            log.warning("%s", report.summary())
        if not records:
            raise DataError(f"{report.source}: no labelled rows ({report.summary()})")
        super().__init__(records, input_config, class_names=names, report=report, **kw)
        self.hf = hf_dataset
        self.frames_column = frames_column

    def load_frames(self, index: int) -> list[Image.Image]:
        row = self.records[index].line
        value = self.hf[row][self.frames_column]
        if isinstance(value, (str, os.PathLike)):
            value = list_frames(value)
        return self.sample_frames(index, [v["path"] if isinstance(v, dict) else v for v in value], f"row {row}")


def load_hf_dataset(name_or_path: str, split: str = "train", input_config: InputConfig = InputConfig(), *,
                    frames_column: str = "frames", label_column: str = "label", **kw) -> HFClipDataset:
    """A dataset from the Hub (``org/name``) or local files (a folder saved with ``save_to_disk``, or
    files that ``datasets.load_dataset`` reads). Needs the optional ``datasets`` package."""
    ds = read_hf_dataset(name_or_path, split)
    return HFClipDataset(ds, input_config, frames_column=frames_column, label_column=label_column,
                         source=f"{name_or_path}@{split}", **kw)


def read_hf_dataset(name_or_path: str, split: str = "train"):
    """One split of a Hugging Face dataset (Hub id, or a folder saved with ``save_to_disk``) as a
    ``datasets.Dataset``. Needs the optional ``datasets`` package."""
    try:
        import datasets
    except ImportError:
        raise DataError("Hugging Face datasets support needs the 'datasets' package (pip install datasets)") from None
    p = Path(name_or_path)
    if p.is_dir() and (p / "dataset_dict.json").is_file():
        ds = datasets.load_from_disk(str(p))
        if split not in ds:
            raise DataError(f"dataset {name_or_path!r} has no split {split!r} (it has {', '.join(ds)})")
        return ds[split]
    if p.is_dir() and (p / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(p))
    try:
        return datasets.load_dataset(name_or_path, split=split)
    except Exception as e:  # datasets raises many types for missing repos, offline, bad files
        raise DataError(f"cannot load dataset {name_or_path!r} split {split!r}: {e}") from None


# --- one entry point -------------------------------------------------------------------------
def open_dataset(spec: str | Path, input_config: InputConfig = InputConfig(), *, class_names: Sequence[str],
                 train: bool = False, augment="none", seed: int = 1, label_base: int = 0, root=None,
                 path_map=None, cache_dir: str | Path | None = None, hf_split: str = "train") -> ClipDataset:
    """A dataset from a spec string:

    - ``list.txt``: an official annotation list (``<frame_dir> <num_frames> <label>``);
    - a folder ``<class>/<clip folder>/<frames>`` or ``<class>/<video file>`` (videos are ingested once into
      ``cache_dir``, default ``<folder>/.dferclip-frames``);
    - ``hf:<Hub id or local path>[@split]``: a Hugging Face dataset with ``frames`` and ``label`` columns.
    """
    kw = dict(train=train, augment=augment, seed=seed)
    s = str(spec)
    if s.startswith("hf:"):
        name, _, split = s[3:].partition("@")
        return load_hf_dataset(name, split or hf_split, input_config, num_classes=len(class_names), **kw)
    p = Path(s)
    if p.is_file():
        return load_annotation_dataset(p, input_config, num_classes=len(class_names), label_base=label_base,
                                       root=root, path_map=path_map, class_names=class_names, **kw)
    if not p.is_dir():
        raise DataError(f"no dataset at {s!r}: expected an annotation list, a class-folder tree or hf:<name>")
    videos = scan_video_folders(p, class_names)
    if videos:
        cache = Path(cache_dir) if cache_dir else p / ".dferclip-frames"
        list_file, report = ingest_videos(videos, cache, image_size=max(input_config.image_size, 112))
        if report.bad_lines:
            log.warning("%d videos could not be ingested (first: %s: %s)", len(report.bad_lines),
                        report.bad_lines[0][1], report.bad_lines[0][2])
        return load_annotation_dataset(list_file, input_config, num_classes=len(class_names),
                                       class_names=class_names, **kw)
    report = DataReport(source=str(p))
    records = scan_class_folders(p, class_names)
    report.listed = len(records)
    records = check_frames(records, report)
    if report.problems:
        log.warning("%s", report.summary())
    if not records:
        raise DataError(f"{p}: no clips found (expected <class>/<clip folder>/<frames> or <class>/<videos>)")
    return ClipDataset(records, input_config, report=report, class_names=class_names, **kw)
