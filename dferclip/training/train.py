"""Training: the official DFER-CLIP recipe by default, single process or ``torchrun`` (DDP).

A run folder holds::

    config.json        the resolved training config
    metrics.jsonl      one line per epoch (loss, accuracy, learning rates, selection metrics); TensorBoard
                       event files beside it when tensorboard is installed
    train_state.pt     everything to resume (weights, optimizer, scheduler, epoch, RNG, best score);
                       tensors and plain types only, readable with ``torch.load(..., weights_only=True)``
    best/              the selected model in the project's format (``dferclip.load_model("run/best")``)
    results.json       the selected model's test metrics (UAR, WAR, per-class recall, confusion)
    confusion.png      its confusion matrix (when matplotlib is installed)

A run only writes into a new or empty folder, or into the run it resumes (``resume``); ``replace`` moves an
earlier run aside to ``<output>.replaced-<time>``: earlier results are never overwritten or appended to. Every
file is written atomically, ``best/`` as a whole folder.

Model selection uses a validation split carved from the training list (stratified, seeded) unless
``selection="test"``, the official protocol (the best epoch on the test split, which flatters the numbers).
Every random choice in the data comes from (seed, epoch, clip index), so a run gives the same result on any
number of processes with the same global batch, and a resumed run continues exactly.

Models with several input streams (FineCLIPER, ``training/configs/fineclipper.json``) get their datasets wrapped
after the validation split (:func:`dferclip.evaluate.wrap_for_model`): items become input dicts with the
face-analysis renders and caption tokens. ``captions`` names the caption file (``dferclip.captions``; EmoCLIP pairs its training clips with them,
``training/configs/emoclip.json``); the
face analysis of each clip is cached in ``face_cache`` (default ``<output>/../face-cache``, beside
``frames-cache``, so the folds of a 5-fold run share it). How many clips lack a caption is logged and kept
in ``results.json`` under ``captions``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from ..config import CLIP_MEAN, CLIP_STD, ModelConfig, PromptConfig, get_config
from ..errors import TrainingError
from ..files import atomic_write, atomic_write_with, write_json
from ..metrics import compute_metrics
from ..progress import progress_bar
from ..runtime import autocast, mixed_precision_dtype, to_device
from ..text.descriptions import (
    DescriptionSet,
    as_description_set,
    load_description_set,
    official_descriptions,
)
from ..workers import sigchld_kept
from .data import augment_for, open_dataset, stratified_split, subset
from .evaluate import (
    aggregate_folds,
    caption_coverage,
    encode_dataset,
    open_captions,
    plot_confusion,
    predict_from_embeddings,
    worker_context,
    wrap_for_model,
)

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = "official"
STATE_FILE = "train_state.pt"


@dataclass
class TrainConfig:
    """Training settings as data. Defaults = the official recipe (``training/configs/official.json``)."""

    model: str = "dferclip-vit-b-32"  # a model config name or JSON path (architecture)
    init: str = "pretrained:openai"  # pretrained[:tag] | random | any dferclip.load_model source
    descriptions: Optional[str] = None  # description set name/path; "synthetic"; None: official texts
    num_classes: int = 7
    num_frames: int = 16
    input_norm: Any = None  # None: the model's own (official: none); "clip"; or [mean, std] (new models only)
    logit_scale: Optional[float] = None  # None: the model's (official: 100 = cos / 0.01); new models only
    model_overrides: dict = field(default_factory=dict)  # merged into the model config (new models only)
    temporal_layers: int = 1
    contexts: int = 8
    class_specific_contexts: bool = True
    dataset: str = "DFEW"  # augmentation preset: DFEW, FERV39K, MAFW, none
    augment: Optional[dict] = None  # explicit augmentation (overrides the preset)
    train: Optional[str] = None  # data specs (see dferclip.data.open_dataset); may hold {fold}
    val: Optional[str] = None
    test: Optional[str] = None
    folds: Optional[list] = None  # e.g. [1, 2, 3, 4, 5] for DFEW / MAFW
    label_base: int = 0  # the official lists are 0-based
    data_root: Optional[str] = None
    path_map: dict = field(default_factory=dict)  # {"/data/EECS-IoannisLab/datasets": "/my/datasets"}
    captions: Optional[str] = None  # FineCLIPER: caption file (or folder of them) of the clips; may hold {fold}
    face_cache: Optional[str] = None  # FineCLIPER: face-analysis cache folder; None: <output>/../face-cache
    selection: str = "val"  # "val": given or carved from train; "test": the official protocol; "last"
    val_fraction: float = 0.1
    select_metric: str = "war"  # the official code keeps the best top-1 (WAR)
    epochs: int = 50
    batch_size: int = 48  # global, over all processes
    eval_batch_size: Optional[int] = None
    optimizer: str = "sgd"  # sgd | adamw
    lr: dict = field(default_factory=lambda: {"temporal": 1e-2, "image_encoder": 1e-5, "prompt_learner": 1e-3})
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: list = field(default_factory=lambda: [30, 40])
    gamma: float = 0.1
    seed: int = 1
    workers: int = 8
    amp: bool = True  # on GPU only
    device: str = "auto"
    output: str = "runs/dferclip"
    log_every: int = 20

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = {k: v for k, v in d.items() if not k.startswith("_")}
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TrainingError(f"unknown training config keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: Sequence[str]) -> "TrainConfig":
        """``key=value`` strings; values are JSON when they parse as JSON, else strings; ``lr.temporal=0.1``
        sets one entry of a dict field."""
        d = self.to_dict()
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise TrainingError(f"override {item!r} is not key=value")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            head, _, sub = key.strip().partition(".")
            if head not in d:
                raise TrainingError(f"unknown training config key {head!r}")
            if sub:
                if not isinstance(d[head], dict):
                    raise TrainingError(f"{head} is not a mapping")
                d[head] = dict(d[head]) | {sub: value}
            else:
                d[head] = value
        return TrainConfig.from_dict(d)


def load_train_config(name_or_path: str | Path = DEFAULT_CONFIG) -> TrainConfig:
    p = Path(name_or_path)
    if not p.suffix:
        p = CONFIG_DIR / f"{name_or_path}.json"
    if not p.is_file():
        names = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.json")))
        raise TrainingError(f"no training config {str(name_or_path)!r}; built in: {names}")
    try:
        return TrainConfig.from_dict(json.loads(p.read_text()))
    except json.JSONDecodeError as e:
        raise TrainingError(f"{p} is not valid JSON: {e}") from None


# --- processes and devices -------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device: str = "auto") -> Dist:
    """torchrun's environment -> a process group (nccl on GPU, gloo on CPU); one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu") if device in ("auto", "cuda") else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    return Dist(rank, world, local_rank, dev)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- model -----------------------------------------------------------------------------------
def resolve_descriptions(cfg: TrainConfig) -> DescriptionSet:
    if cfg.descriptions == "synthetic":
        from .synthetic import synthetic_descriptions

        ds = synthetic_descriptions()
    elif cfg.descriptions:
        ds = load_description_set(cfg.descriptions)
    else:
        ds = official_descriptions(cfg.num_classes)
    if ds.num_classes != cfg.num_classes:
        raise TrainingError(f"description set {ds.name!r} has {ds.num_classes} classes; num_classes is "
                            f"{cfg.num_classes}")
    return ds


def _merge(base: dict, changes: dict, path: str = "") -> dict:
    out = dict(base)
    for k, v in changes.items():
        if k not in out:
            raise TrainingError(f"model_overrides: the model config has no {path}{k}")
        if isinstance(v, dict):
            if not isinstance(out[k], dict):
                raise TrainingError(f"model_overrides: {path}{k} is not a mapping in {out[k]!r}")
            out[k] = _merge(out[k], v, f"{path}{k}.")
        else:
            out[k] = v
    return out


def model_config(cfg: TrainConfig) -> ModelConfig:
    base = get_config(cfg.model)
    if cfg.model_overrides:
        base = ModelConfig.from_dict(_merge(base.to_dict(), cfg.model_overrides))
    norm = {}
    if cfg.input_norm == "clip":
        norm = {"mean": CLIP_MEAN, "std": CLIP_STD}
    elif cfg.input_norm is not None:
        try:
            norm = {"mean": tuple(cfg.input_norm[0]), "std": tuple(cfg.input_norm[1])}
        except (TypeError, IndexError):
            raise TrainingError('input_norm must be null, "clip" or [mean, std]') from None
    return base.replace(
        temporal=dataclasses.replace(base.temporal, layers=cfg.temporal_layers),
        prompt=PromptConfig(n_ctx=cfg.contexts, class_specific=cfg.class_specific_contexts,
                            placeholder=base.prompt.placeholder),
        input=dataclasses.replace(base.input, num_frames=cfg.num_frames, **norm),
        logit_scale=base.logit_scale if cfg.logit_scale is None else float(cfg.logit_scale),
    )


def build_for_training(cfg: TrainConfig, descriptions: DescriptionSet):
    """A fresh model (random or open_clip pretrained towers) or one loaded to fine-tune."""
    from ..models import build_model
    from ..weights.checkpoints import load_model

    kind, _, tag = cfg.init.partition(":")
    if kind == "random":
        log.warning("training from random weights (no CLIP initialisation)")
        model = build_model(model_config(cfg), descriptions)
    elif kind == "pretrained":
        model = build_model(model_config(cfg), descriptions, pretrained=tag or "openai")
    else:
        if cfg.input_norm is not None or cfg.logit_scale is not None or cfg.model_overrides:
            raise TrainingError("input_norm, logit_scale and model_overrides apply to new models only; "
                                "a loaded model keeps its own architecture")
        model = load_model(cfg.init, descriptions=as_description_set(descriptions, descriptions.num_classes))
        if model.input_config.num_frames != cfg.num_frames:
            raise TrainingError(f"{cfg.init} takes {model.input_config.num_frames} frames; num_frames is "
                                f"{cfg.num_frames}")
    model.weights_info = {"kind": model.family, "trained": False, "source": None, "init": cfg.init}
    return model


def trainable_groups(model, lr: Optional[dict] = None) -> dict:
    """Freeze everything but the official groups (the text tower stays frozen); a group whose rate in ``lr``
    is 0 stays frozen too and is left out (EmoCLIP's default recipe trains no CLIP tower)."""
    groups = model.param_groups()
    if lr is not None:
        groups = {name: params for name, params in groups.items() if float(lr.get(name, 1.0)) != 0.0}
    for p in model.parameters():
        p.requires_grad_(False)
    for params in groups.values():
        for p in params:
            p.requires_grad_(True)
    return groups


def make_optimizer(cfg: TrainConfig, groups: dict):
    missing = set(groups) - set(cfg.lr)
    if missing:
        raise TrainingError(f"lr needs entries for {sorted(missing)}")
    param_groups = [{"params": groups[name], "lr": float(cfg.lr[name]), "name": name} for name in groups]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=float(cfg.lr["temporal"]), momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
    raise TrainingError(f"unknown optimizer {cfg.optimizer!r} (sgd, adamw)")


# --- logging ---------------------------------------------------------------------------------
class RunLog:
    """metrics.jsonl always; TensorBoard scalars too when tensorboard is installed (rank 0 only)."""

    def __init__(self, out: Path, enabled: bool, history: Sequence[dict] = ()):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tb = None
        if enabled:  # a resumed run's log holds its saved epochs, nothing older or later
            with atomic_write(self.path) as f:
                f.write("".join(json.dumps(record) + "\n" for record in history))
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                log.info("tensorboard not installed: logging to %s only", self.path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(k, v, record["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --- the loop --------------------------------------------------------------------------------
def evaluate_distributed(model, dataset, d: Dist, batch_size: int, workers: int, amp: bool):
    """Each process encodes every world-th clip; rank 0 gets all labels and predictions (None elsewhere)."""
    shard = list(range(d.rank, len(dataset), d.world))
    emb, labels = encode_dataset(model, dataset, batch_size=batch_size, device=d.device, workers=workers,
                                 amp=amp, indices=shard)
    preds = predict_from_embeddings(model, emb.to(d.device)) if len(emb) else np.empty(0, np.int64)
    if not d.enabled:
        return labels, preds
    gathered = [None] * d.world
    dist.all_gather_object(gathered, (shard, labels.tolist(), preds.tolist()))
    if not d.main:
        return None, None
    order, y, p = [], [], []
    for s, lab, pr in gathered:
        order += s
        y += lab
        p += pr
    idx = np.argsort(order)
    return np.asarray(y)[idx], np.asarray(p)[idx]


def _state(model, optimizer, scheduler, scaler, epoch, best, history, cfg) -> dict:
    return {
        "format": "dferclip.train_state/1",
        "epoch": epoch,  # epochs completed
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "best": best,
        "history": history,
        **rng_state(),
        "config": json.dumps(cfg.to_dict()),
    }


def rng_state() -> dict:
    """torch's random streams: the CPU generator's state and each CUDA device's (none without CUDA)."""
    return {"rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_state(state: dict) -> int:
    """Put back the streams :func:`rng_state` saved; returns how many CUDA devices got theirs back (those
    present both then and now). A state saved with CUDA and resumed without it continues, with a warning:
    the continuation is then not exact."""
    torch.set_rng_state(state["rng_torch"])
    saved = list(state.get("rng_cuda") or [])
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    restored = min(len(saved), available)
    for index in range(restored):
        torch.cuda.set_rng_state(saved[index], index)
    if len(saved) > restored:
        log.warning("the training state holds the random streams of %d CUDA device(s), this machine has %d: "
                    "the resumed run is not an exact continuation", len(saved), available)
    return restored


def _atomic_save(obj, path: Path) -> None:
    atomic_write_with(path, lambda tmp: torch.save(obj, tmp))


def load_train_state(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / STATE_FILE
    if not p.is_file():
        raise TrainingError(f"no training state to resume at {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated files, foreign pickles
        raise TrainingError(f"cannot read training state {p}: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != "dferclip.train_state/1":
        raise TrainingError(f"{p} is not a dferclip training state")
    return state


def _datasets(cfg: TrainConfig, model, out: Path):
    names = model.class_names
    common = dict(class_names=names, seed=cfg.seed, label_base=cfg.label_base, root=cfg.data_root,
                  path_map=cfg.path_map, cache_dir=out.parent / "frames-cache")
    if not cfg.train:
        raise TrainingError("no training data: set train (an annotation list, a class-folder tree or hf:<name>)")
    aug = augment_for(cfg.augment if cfg.augment is not None else cfg.dataset)
    train_ds = open_dataset(cfg.train, model.input_config, train=True, augment=aug, **common)
    test_ds = open_dataset(cfg.test, model.input_config, **common) if cfg.test else None
    val_ds = None
    if cfg.selection == "test":
        if test_ds is None:
            raise TrainingError("selection='test' (the official protocol) needs a test set")
        val_ds = test_ds
    elif cfg.selection == "val":
        if cfg.val:
            val_ds = open_dataset(cfg.val, model.input_config, **common)
        elif cfg.val_fraction > 0:
            tr, va = stratified_split(train_ds.labels, cfg.val_fraction, cfg.seed)
            train_ds, val_ds = subset(train_ds, tr), subset(train_ds, va, train=False)
    elif cfg.selection != "last":
        raise TrainingError(f"selection must be val, test or last, not {cfg.selection!r}")
    # after the split: subset() needs the plain clip dataset
    train_ds, val_ds, test_ds = _wrap_streams(cfg, model, out, train_ds, val_ds, test_ds)
    return train_ds, val_ds, test_ds


def face_cache_dir(cfg: TrainConfig, out: Path) -> Path:
    return Path(cfg.face_cache) if cfg.face_cache else out.parent / "face-cache"


def _wrap_streams(cfg: TrainConfig, model, out: Path, *datasets):
    """Each distinct dataset wrapped once for a multi-stream model (val may be the test set)."""
    from ..video.face_analysis import AnalysisCache

    captions = None
    if cfg.captions and not (model.uses_captions or getattr(model, "trains_on_captions", False)):
        log.warning("captions=%s ignored: this %s model (streams %s) has no caption stream", cfg.captions,
                    model.family, ", ".join(model.streams))
    elif cfg.captions:
        captions = open_captions(cfg.captions)
    cache = None
    if model.needs_face_analysis:
        cache = AnalysisCache(face_cache_dir(cfg, out))
        log.info("face analysis cached in %s", cache.folder)
    wrapped: dict[int, Any] = {}
    for ds in datasets:
        if ds is not None and id(ds) not in wrapped:
            wrapped[id(ds)] = wrap_for_model(model, ds, captions=captions, face_cache=cache)
    return tuple(wrapped[id(ds)] if ds is not None else None for ds in datasets)


def _caption_report(cfg: TrainConfig, splits: dict) -> dict:
    """Per split ``{"clips", "without_caption"}`` (models with a caption stream), logged once."""
    report = {name: c for name, ds in splits.items() if ds is not None and (c := caption_coverage(ds)) is not None}
    if report:
        text = "; ".join(f"{name}: {c['without_caption']} of {c['clips']} clips" for name, c in report.items())
        if any(c["without_caption"] for c in report.values()):
            source = cfg.captions or "no caption file given (set captions)"
            log.warning("clips without a caption (FineCLIPER: their caption stream is off; EmoCLIP: paired with "
                        "their class description) - %s [%s]", text, source)
        else:
            log.info("every clip has a caption (%s)", text)
    return report


def claim_output(out: Path, *, resume: bool = False, replace: bool = False) -> Optional[Path]:
    """Make sure a run may write into ``out``: a new or empty folder, or the earlier run being resumed. Another
    earlier run there raises TrainingError, unless ``replace``: then it is moved aside to
    ``<out>.replaced-<time>`` (returned), never deleted."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise TrainingError(f"output {out} is a file, not a folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries or resume:
        return None
    if not replace:
        listed = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise TrainingError(f"{out} already holds a run ({listed}): continue it with --resume {out}, choose "
                            f"another --output, or pass --replace to start over (the earlier run is then kept as "
                            f"{out.name}.replaced-<time>)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = out.with_name(f"{out.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = out.with_name(f"{out.name}.replaced-{stamp}-{n}")
    os.replace(out, aside)
    log.warning("%s held an earlier run: moved to %s", out, aside)
    return aside


def _claim_on_main(d: Dist, out: Path, *, resume: bool, replace: bool) -> None:
    """:func:`claim_output` on rank 0; every rank raises its refusal."""
    problem = None
    if d.main:
        try:
            claim_output(out, resume=resume, replace=replace)
        except TrainingError as e:
            problem = str(e)
    if d.enabled:
        box = [problem]
        dist.broadcast_object_list(box, src=0)
        problem = box[0]
    if problem:
        raise TrainingError(problem)


def train_once(cfg: TrainConfig, *, resume: str | Path | None = None, replace: bool = False,
               dist_info: Optional[Dist] = None, output_claimed: bool = False) -> dict:
    """One training run (one fold). Returns the summary written to ``results.json`` (on every rank).

    The output folder must be new or empty, or hold the run being resumed; ``replace`` moves an earlier run
    aside (:func:`claim_output`). ``output_claimed``: the caller has checked the folder already."""
    d = dist_info or setup_distributed(cfg.device)
    out = Path(cfg.output)
    if cfg.batch_size % d.world:
        raise TrainingError(f"batch_size {cfg.batch_size} must be divisible by the {d.world} processes")
    if not output_claimed:
        _claim_on_main(d, out, resume=bool(resume), replace=replace)
    seed_everything(cfg.seed)
    descriptions = resolve_descriptions(cfg)
    model = build_for_training(cfg, descriptions)
    train_ds, val_ds, test_ds = _datasets(cfg, model, out)
    captions = _caption_report(cfg, {"train": train_ds, cfg.selection: val_ds, "test": test_ds})
    if len(train_ds) < cfg.batch_size:
        raise TrainingError(f"{len(train_ds)} training clips: fewer than one batch of {cfg.batch_size}")
    model.to(d.device)
    groups = trainable_groups(model, cfg.lr)
    optimizer = make_optimizer(cfg, groups)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    amp_dtype = mixed_precision_dtype(d.device, cfg.amp)
    use_amp = amp_dtype != torch.float32
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    start_epoch, best, history, best_state = 0, {"score": -1.0, "epoch": -1}, [], None
    if resume:
        state = load_train_state(resume)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state)
        start_epoch, best, history = state["epoch"], dict(state["best"]), list(state["history"])
        log.info("resumed from %s after epoch %d", resume, start_epoch)

    ddp = model
    if d.enabled:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    per_rank = cfg.batch_size // d.world
    sampler = DistributedSampler(train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed)
    eval_bs = cfg.eval_batch_size or per_rank
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", cfg.to_dict())
        log.info("training %d clips, selecting on %s (%s clips), testing on %s clips, %d process(es), %s",
                 len(train_ds), cfg.selection, len(val_ds) if val_ds else 0, len(test_ds) if test_ds else 0,
                 d.world, d.device)
    run_log = RunLog(out, d.main, history)
    with sigchld_kept():  # the workers' SIGCHLD handler goes when the epochs end
        try:
            for epoch in range(start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                sampler.set_epoch(epoch)
                train_ds.set_epoch(epoch)
                loader = DataLoader(train_ds, batch_size=per_rank, sampler=sampler, num_workers=cfg.workers,
                                    drop_last=True, pin_memory=d.device.type == "cuda",
                                    multiprocessing_context=worker_context(train_ds, cfg.workers))
                model.train()
                sums = torch.zeros(3, dtype=torch.float64, device=d.device)  # loss * n, correct, n
                for step, (inputs, label) in enumerate(progress_bar(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                                                                        unit="batch", enabled=d.main, leave=False)):
                    inputs = to_device(inputs, d.device, non_blocking=True)  # a video tensor or an input dict
                    label = label.to(d.device, non_blocking=True)
                    with autocast(d.device, amp_dtype):
                        logits = ddp(inputs)
                    loss = model.loss(logits, label)  # the family's objective (cross-entropy, or FineCLIPER's PN loss)
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        loss.backward()
                        optimizer.step()
                    with torch.no_grad():
                        sums += torch.stack([loss.detach().double() * len(label),
                                             (logits.argmax(-1) == label).sum().double(),
                                             torch.tensor(float(len(label)), device=d.device, dtype=torch.float64)])
                    if d.main and cfg.log_every and (step + 1) % cfg.log_every == 0:
                        log.info("epoch %d step %d loss %.4f", epoch + 1, step + 1, loss.item())
                if d.enabled:
                    dist.all_reduce(sums)
                lrs = {f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups}
                scheduler.step()
                record = {"epoch": epoch + 1, "train/loss": sums[0].item() / max(sums[2].item(), 1),
                          "train/acc": 100 * sums[1].item() / max(sums[2].item(), 1), **lrs,
                          "train/seconds": time.perf_counter() - t0}
                improved = val_ds is None
                if val_ds is not None:
                    y, p = evaluate_distributed(model, val_ds, d, eval_bs, cfg.workers, use_amp)
                    if d.main:
                        m = compute_metrics(y, p, model.num_classes)
                        record |= {f"{cfg.selection}/uar": m.uar, f"{cfg.selection}/war": m.war}
                        score = m.uar if cfg.select_metric == "uar" else m.war
                        improved = score > best["score"]
                        if improved:
                            best = {"score": score, "epoch": epoch + 1, "metric": cfg.select_metric,
                                    "split": cfg.selection}
                if d.enabled:
                    flag = [improved]
                    dist.broadcast_object_list(flag, src=0)
                    improved = flag[0]
                if improved:  # every process keeps the selected weights, so no shared file system is needed
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.named_parameters()
                                  if v.requires_grad}
                if d.main:
                    history.append(record)
                    run_log.write(record)
                    log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                                                   if isinstance(v, float)))
                    if improved:
                        model.weights_info = {"kind": model.family, "trained": True, "source": None, "init": cfg.init,
                                              "epoch": epoch + 1, "selection": best}
                        from ..weights.checkpoints import save_model

                        save_model(model, out / "best", overwrite=True)  # this run's own best, swapped whole
                    _atomic_save(_state(model, optimizer, scheduler, scaler, epoch + 1, best, history, cfg),
                                 out / STATE_FILE)
                if d.enabled:
                    dist.barrier()
        finally:
            run_log.close()
    return _finish(cfg, model, best_state, test_ds, d, eval_bs, use_amp, best, out, captions)


def _saved_best(model, d: Dist, out: Path) -> Optional[dict]:
    """The trainable weights of ``out/best`` as rank 0 reads them, on every rank; None (everywhere) when rank 0
    has no ``best/``. Rank 0 broadcasts them: without a shared file system the other ranks have no ``best/``
    (or an old one of their own), and each rank testing what it finds mixed two models' predictions in the
    test metrics."""
    from ..weights.checkpoints import load_own

    params = {k: v for k, v in model.named_parameters() if v.requires_grad}
    state, problem = None, None
    if d.main and (out / "best").is_dir():
        try:
            saved = load_own(out / "best").state_dict()
            state = {k: saved[k].to(device=d.device, dtype=v.dtype).contiguous() for k, v in params.items()}
        except Exception as e:  # every rank raises it, rather than the others waiting for weights
            problem = f"cannot read the selected model {out / 'best'}: {str(e).splitlines()[0] if str(e) else e!r}"
    if d.enabled:
        box = [state is not None, problem]
        dist.broadcast_object_list(box, src=0)
        found, problem = box
        if found:
            if not d.main:
                state = {k: torch.empty_like(v) for k, v in params.items()}
            for k in params:  # the same order on every rank
                dist.broadcast(state[k], src=0)
    if problem:
        raise TrainingError(problem)
    return state


def _finish(cfg, model, best_state, test_ds, d: Dist, eval_bs, use_amp, best, out: Path, captions: dict) -> dict:
    """Test the selected model, write results.json and the confusion plot."""
    if best_state is None:  # resumed after the last improvement: the selected weights are in rank 0's best/
        best_state = _saved_best(model, d, out)
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    selected = model
    summary: dict[str, Any] = {"selection": best, "output": str(out)}
    if captions:
        summary["captions"] = captions
    if test_ds is not None:
        y, p = evaluate_distributed(selected, test_ds, d, eval_bs, cfg.workers, use_amp)
        if d.main:
            m = compute_metrics(y, p, selected.num_classes)
            summary["test"] = m.to_dict(selected.class_names)
            png = plot_confusion(m.confusion, selected.class_names, out / "confusion.png",
                                 f"UAR {m.uar:.2f}  WAR {m.war:.2f}  (n={m.n})")
            summary["confusion_plot"] = str(png) if png else None
    if d.main:
        write_json(out / "results.json", summary)
    return summary


def train(cfg: TrainConfig, *, resume: str | Path | None = None, replace: bool = False) -> dict:
    """Train, looping over ``cfg.folds`` (``{fold}`` in data paths) with one run folder per fold; the fold
    means of UAR and WAR go to ``<output>/folds.json``, as the official 5-fold driver reports them.

    ``cfg.output`` must be new or empty, or hold the run being resumed; with ``replace`` an earlier run there
    is moved aside to ``<output>.replaced-<time>``. Nothing is ever deleted."""
    d = setup_distributed(cfg.device)
    try:
        if not cfg.folds:
            return train_once(cfg, resume=resume, replace=replace, dist_info=d)
        _claim_on_main(d, Path(cfg.output), resume=bool(resume), replace=replace)
        results = []
        for k in cfg.folds:
            fold_cfg = dataclasses.replace(
                cfg, folds=None, output=str(Path(cfg.output) / f"fold{k}"),
                **{f: getattr(cfg, f).replace("{fold}", str(k)) for f in ("train", "val", "test", "captions")
                   if getattr(cfg, f)})
            fold_resume = None
            if resume and (Path(resume) / f"fold{k}" / STATE_FILE).is_file():
                fold_resume = Path(resume) / f"fold{k}"
            results.append(train_once(fold_cfg, resume=fold_resume, dist_info=d, output_claimed=True))
        tested = [r["test"] for r in results if "test" in r]
        summary = {"folds": [dict(r, fold=k) for k, r in zip(cfg.folds, results)]}
        if d.main and tested:
            summary["mean"] = aggregate_folds(tested)
            write_json(Path(cfg.output) / "folds.json", summary)
        return summary
    finally:
        if d.enabled and dist.is_initialized():
            dist.destroy_process_group()
