"""Published weights by name: the registry (``published.json``, package data) and where each entry is cached.

An entry says what the weights are (family, architecture, dataset and fold, class set), where they are hosted
(``{"drive": id}``, ``{"hub": repo}`` in the project's format, ``{"hub": repo, "file": "x.pth"}`` for an official
pickle on the Hub, or ``{"open_clip": tag}`` for open_clip's own pretrained download), their licence and source,
the paper's figures, and, once seen, their size and sha256. ``DFERCLIP_PUBLISHED=path.json`` replaces the
shipped registry (tests point it at tiny architectures); ``DFERCLIP_DEFAULT_WEIGHTS`` picks the app's default.

Fetching, verifying and converting live in :mod:`dferclip.weights.fetch`; converted weights are cached in
``cache_dir()/weights/<name>/`` in the project's format (``model.safetensors`` + ``config.json``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointError
from ..files import cache_dir

REGISTRY_FILE = Path(__file__).with_name("published.json")
FORMAT = "dferclip.published/1"
HOSTS = ("drive", "hub", "open_clip")
_FAMILY_NAMES = {"dferclip": "DFER-CLIP", "fineclipper": "FineCLIPER", "emoclip": "EmoCLIP", "clip": "CLIP"}


@dataclass(frozen=True)
class PublishedWeights:
    """One registry entry (see the module docstring)."""

    name: str
    family: str
    config: str  # a name in dferclip/models/configs or a config JSON path
    host: dict
    class_set: str
    source: str
    licence: dict = field(default_factory=dict)
    paper: dict = field(default_factory=dict)
    dataset: str | None = None
    fold: int | None = None
    folds: int | None = None
    size: int | None = None
    sha256: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> PublishedWeights:
        try:
            entry = cls(**d)
        except TypeError as e:
            raise CheckpointError(f"published weights entry {d.get('name')!r} is malformed: {e}") from None
        if sum(k in entry.host for k in HOSTS) != 1:
            raise CheckpointError(f"published weights entry {entry.name!r}: host needs exactly one of {HOSTS}")
        return entry

    @property
    def host_kind(self) -> str:
        return next(k for k in HOSTS if k in self.host)

    @property
    def load_source(self) -> str | None:
        """The ``load_model`` source that serves this entry without the cache (open_clip entries), else None."""
        if self.host_kind == "open_clip":
            return f"pretrained:{self.config}:{self.host['open_clip']}"
        return None

    @property
    def title(self) -> str:
        """e.g. "DFER-CLIP, DFEW fold 1 of 5" or "CLIP (zero-shot)"."""
        family = _FAMILY_NAMES.get(self.family, self.family)
        if not self.dataset:
            return f"{family} (zero-shot)"
        fold = f" fold {self.fold} of {self.folds}" if self.fold else ""
        return f"{family}, {self.dataset}{fold}"

    @property
    def host_text(self) -> str:
        kind = self.host_kind
        if kind == "drive":
            return f"Google Drive file {self.host['drive']}"
        if kind == "hub":
            return f"Hugging Face Hub {self.host['hub']}" + (f"/{self.host['file']}" if self.host.get("file") else "")
        return f"open_clip pretrained '{self.host['open_clip']}' (Hugging Face Hub)"

    @property
    def figures_text(self) -> str:
        p = self.paper or {}
        if p.get("uar") is None:
            return p.get("scope", "")
        return f"paper: UAR {p['uar']:.2f} / WAR {p['war']:.2f} ({p.get('scope', '')})"

    def facts(self) -> dict:
        """What the weights are, for ``weights_info`` and the project's ``config.json``."""
        return {"published": self.name, "title": self.title, "family": self.family, "dataset": self.dataset,
                "fold": self.fold, "folds": self.folds, "class_set": self.class_set, "host": self.host_text,
                "origin": self.source, "licence": dict(self.licence), "paper": dict(self.paper)}


@dataclass(frozen=True)
class Registry:
    entries: dict  # name -> PublishedWeights, in file order
    default: str | None
    path: Path


_loaded: dict = {}


def registry_path() -> Path:
    return Path(os.environ.get("DFERCLIP_PUBLISHED") or REGISTRY_FILE)


def load_registry(path: str | Path | None = None) -> Registry:
    """The registry at ``path`` (default: ``DFERCLIP_PUBLISHED``, else the shipped one); re-read when it changes."""
    path = Path(path) if path is not None else registry_path()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        raise CheckpointError(f"no published-weights registry at {path}") from None
    cached = _loaded.get(path)
    if cached and cached[0] == stamp:
        return cached[1]
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a published-weights registry (format {data.get('format')!r})")
    entries = {}
    for d in data.get("entries", []):
        e = PublishedWeights.from_dict(d)
        entries[e.name] = e
    reg = Registry(entries, data.get("default"), path)
    _loaded[path] = (stamp, reg)
    return reg


def entries(path: str | Path | None = None) -> list[PublishedWeights]:
    return list(load_registry(path).entries.values())


def get_entry(name: str, path: str | Path | None = None) -> PublishedWeights | None:
    """The entry called ``name``, or None when ``name`` is not a published name."""
    if not isinstance(name, str) or "/" in name or ":" in name:
        return None
    return load_registry(path).entries.get(name)


def entry_for_source(source: str) -> PublishedWeights | None:
    """The entry whose name or ``load_source`` is ``source``."""
    e = get_entry(source)
    if e is not None:
        return e
    return next((e for e in entries() if e.load_source == source), None)


def default_name(path: str | Path | None = None) -> str | None:
    """``DFERCLIP_DEFAULT_WEIGHTS``, else the registry's default."""
    return os.environ.get("DFERCLIP_DEFAULT_WEIGHTS", "").strip() or load_registry(path).default


def weights_root() -> Path:
    return cache_dir() / "weights"


def cache_folder(entry: PublishedWeights) -> Path:
    return weights_root() / entry.name


def is_cached(entry: PublishedWeights) -> bool:
    """Whether the entry loads without a network (converted in our cache, or in the Hugging Face cache)."""
    kind = entry.host_kind
    if kind == "open_clip":
        return _open_clip_cached(entry)
    if kind == "hub" and not entry.host.get("file"):
        return all(_hf_cached(entry.host["hub"], f) for f in ("config.json", "model.safetensors"))
    folder = cache_folder(entry)
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


def _hf_cached(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename), str)


def _open_clip_cached(entry: PublishedWeights) -> bool:
    from ..config import get_config
    from .hub import cached_open_clip_weights

    clip = get_config(entry.config).clip
    return isinstance(clip, str) and cached_open_clip_weights(clip, entry.host["open_clip"]) is not None
