"""Where models run: the one place that decides device and dtype, the ZeroGPU decorator, and the model registry.

Device and precision (:func:`device`, :func:`compute_dtype`, :func:`autocast`, :func:`inference`), the one
place that chooses them for the app, prediction, training and evaluation:

- ``DFERCLIP_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``) overrides; otherwise CUDA when available, else CPU;
- on CUDA the model runs under autocast in bf16 (fp16 on GPUs without bf16): the weights stay fp32 and
  LayerNorm/softmax stay fp32, and the scores are fp32: every model normalises the embeddings and takes the
  last matmul (logits, the positive/negative cosines, the losses' inputs) in fp32 with autocast off
  (``dferclip.models.blocks.fp32_cosine_logits``), so only the towers' rounding reaches the logits. That keeps
  the class probabilities within ~1e-2 of fp32 (``benchmarks/bench_app.py``, ``tests/test_predict.py`` and
  ``tests/test_precision.py`` compare them); on CPU it is fp32.
  ``DFERCLIP_DTYPE`` (``fp32``, ``bf16``, ``fp16``) overrides, e.g. ``bf16`` on CPUs with AVX512-BF16.
- the image tower's backend (:mod:`dferclip.backends`: eager, compile, openvino, int8, auto):
  ``DFERCLIP_BACKEND``, default ``auto`` (the faithful faster one when installed). The registry converts
  each model it loads in a background thread, so the first clips run eagerly instead of waiting;
  :meth:`ModelRegistry.close` (the app calls it when it stops) stops and joins those threads.

On Hugging Face ZeroGPU, model work runs in GPU slots: :mod:`dferclip.zero_gpu` (the boundary and its rules).

The registry (:class:`ModelRegistry`) lists the models the app can switch between, in this order:

1. an explicit source (``--model`` flag or ``DFERCLIP_MODEL``), anything ``dferclip.load_model`` accepts;
2. ``checkpoints/``: the project's folders and official ``.pth`` files (``dferclip.discover_models``);
3. Hugging Face Hub repo ids from ``DFERCLIP_HUB_REPO`` (comma-separated);
4. the published default (``dfew-fold1``, or ``DFERCLIP_DEFAULT_WEIGHTS``) when cached or its host answers;
5. zero-shot CLIP (``pretrained:dferclip-vit-b-32:openai``) when cached or the Hub answers;
6. the offline default ``random`` (ViT-B/32, untrained: :data:`dferclip.checkpoints.UNTRAINED_WARNING`);
   then an untrained FineCLIPER ViT-B/16 (``random:fineclipper-vit-b-16``) when mediapipe is installed,
   and an untrained EmoCLIP ViT-B/32 (``random:emoclip-vit-b-32``);
7. every other published entry (``dferclip.weights.published``; DFEW, FERV39k, MAFW), marked cached or not,
   and zero-shot CLIP if it was not offered above.

The first entry is the default. Offline with nothing cached, the reachability checks run in parallel and cost
under two seconds together. Models load lazily on first use, at most :attr:`ModelRegistry.max_loaded`
at a time (least recently used ones are dropped).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

from . import backends, files, zero_gpu
from .errors import DferclipError, WeightsUnavailableError
from .weights import fetch, published
from .weights.checkpoints import UNTRAINED_WARNING, discover_models, load_model

log = logging.getLogger(__name__)

CONVERSION_THREAD = "dferclip-backend"  # the name of a registry's background conversion threads
DEFAULT_SOURCE = "random"
FINECLIPER_SOURCE = "random:fineclipper-vit-b-16"
EMOCLIP_SOURCE = "random:emoclip-vit-b-32"
ZERO_SHOT_SOURCE = "pretrained:dferclip-vit-b-32:openai"
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


# --- device and precision --------------------------------------------------------------------
def device() -> torch.device:
    """The device models run on (``DFERCLIP_DEVICE``, else CUDA if available, else CPU)."""
    name = os.environ.get("DFERCLIP_DEVICE", "").strip()
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(dev: torch.device | str | None = None) -> torch.dtype:
    """The autocast dtype for ``dev`` (``DFERCLIP_DTYPE``, else bf16/fp16 on CUDA, fp32 on CPU)."""
    dev = torch.device(dev) if dev is not None else device()
    name = os.environ.get("DFERCLIP_DTYPE", "").strip().lower()
    if name:
        if name not in _DTYPES:
            raise ValueError(f"DFERCLIP_DTYPE={name!r}: use one of fp32, bf16, fp16")
        return _DTYPES[name]
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def mixed_precision_dtype(dev: torch.device | str, amp: bool) -> torch.dtype:
    """Training and evaluation: :func:`compute_dtype` when ``amp`` is asked for on CUDA, else fp32 (mixed
    precision on GPU only)."""
    dev = torch.device(dev)
    return compute_dtype(dev) if amp and dev.type == "cuda" else torch.float32


def autocast(dev: torch.device | str, dtype: torch.dtype):
    """``torch.autocast`` on ``dev`` at ``dtype``; disabled (a plain fp32 region) when ``dtype`` is fp32."""
    dev = torch.device(dev)
    if dtype == torch.float32:
        return torch.autocast(dev.type, enabled=False)
    return torch.autocast(dev.type, dtype=dtype)


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


@contextmanager
def inference(dev: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Iterator[None]:
    """No-grad inference on ``dev``, under autocast when ``dtype`` is a reduced precision."""
    dev = torch.device(dev) if dev is not None else device()
    dtype = dtype or compute_dtype(dev)
    with torch.inference_mode():
        if dtype == torch.float32:
            yield
        else:
            with autocast(dev, dtype):
                yield


def to_device(inputs, device, non_blocking: bool = False):
    """Model inputs or features on ``device``: a tensor, or a dict of them (multi-stream models)."""
    if isinstance(inputs, Mapping):
        return {k: v.to(device, non_blocking=non_blocking) for k, v in inputs.items()}
    return inputs.to(device, non_blocking=non_blocking)


# --- the model registry ----------------------------------------------------------------------
@dataclass(frozen=True)
class ModelEntry:
    """A model the app can offer. ``key`` is the ``load_model`` source; ``origin`` says how it was found."""

    key: str
    label: str
    origin: str  # "explicit" | "checkpoints" | "hub" | "published" | "default" | "fineclipper" | "zero-shot"


def _label(origin: str, source: str) -> str:
    if origin == "checkpoints":
        return f"{Path(source).name} (checkpoints/)"
    if origin == "hub":
        return f"{source} (Hugging Face Hub)"
    if origin == "default":
        return "random ViT-B/32 (untrained, offline default)"
    if origin == "fineclipper":
        return "random FineCLIPER ViT-B/16 (untrained; video + face-mesh streams)"
    if origin == "emoclip":
        return "random EmoCLIP ViT-B/32 (untrained; zero-shot video model)"
    if origin == "zero-shot":
        return "zero-shot CLIP ViT-B/32 (OpenAI weights)"
    if origin == "published":
        entry = published.get_entry(source)
        return f"{entry.title} ({len(_classes(entry))} classes, published)"
    return f"{source} (explicit)"


def _classes(entry: published.PublishedWeights) -> list[str]:
    from .text.descriptions import load_class_sets

    return load_class_sets().get(entry.class_set, [])


def _published_entries() -> list[published.PublishedWeights]:
    try:
        return published.entries()
    except DferclipError as e:  # a broken DFERCLIP_PUBLISHED must not stop the app
        log.warning("published weights not offered: %s", e)
        return []


def _available(entries: list) -> dict[str, bool]:
    """name -> cached, or its host reachable; hosts are checked in parallel, ~1.5 s at most in all."""
    from concurrent.futures import ThreadPoolExecutor, TimeoutError, wait

    todo = [e for e in entries if not published.is_cached(e)]
    out = {e.name: True for e in entries if e not in todo}
    if todo:
        pool = ThreadPoolExecutor(max_workers=len(todo))
        futures = {e.name: pool.submit(fetch.host_reachable, e) for e in todo}
        wait(futures.values(), timeout=1.8)
        pool.shutdown(wait=False)
        for name, f in futures.items():
            try:
                out[name] = f.done() and f.result(timeout=0)
            except (TimeoutError, OSError):
                out[name] = False
    return out


def find_models(explicit: str | None = None, checkpoints_dir: Path | None = None) -> list[ModelEntry]:
    """The models on offer, in priority order (see the module docstring). ``explicit`` defaults to
    ``DFERCLIP_MODEL``."""
    explicit = explicit or os.environ.get("DFERCLIP_MODEL", "").strip() or None
    found: list[tuple[str, str]] = []
    if explicit:
        found.append(("explicit", explicit))
    found += [("checkpoints", str(p)) for p in discover_models(checkpoints_dir or files.checkpoints_dir())]
    hub = os.environ.get("DFERCLIP_HUB_REPO", "")
    found += [("hub", r.strip()) for r in hub.split(",") if r.strip()]
    pubs = _published_entries()
    default_pub = next((e for e in pubs if e.name == published.default_name()), None)
    zero_shot = next((e for e in pubs if e.load_source == ZERO_SHOT_SOURCE), None)
    if not found:  # only then does the app's default depend on the network
        available = _available([e for e in (default_pub, zero_shot) if e is not None])
        if default_pub is not None and available[default_pub.name]:
            found.append(("published", default_pub.name))
        if zero_shot is None or available[zero_shot.name]:
            found.append(("zero-shot", ZERO_SHOT_SOURCE))
    found += [("default", DEFAULT_SOURCE)]
    if importlib.util.find_spec("mediapipe") is not None:  # its landmark and parsing streams need the face mesh
        found.append(("fineclipper", FINECLIPER_SOURCE))
    found.append(("emoclip", EMOCLIP_SOURCE))
    found += [("published", e.name) for e in pubs if not e.load_source]
    found.append(("zero-shot", ZERO_SHOT_SOURCE))
    entries, seen = [], set()
    for origin, source in found:
        if source not in seen:
            seen.add(source)
            entries.append(ModelEntry(source, _label(origin, source), origin))
    return entries


def weights_banner(weights_info: dict) -> tuple[str, Optional[str]]:
    """(what runs, warning or None) for a loaded model's ``weights_info``. Untrained weights always warn."""
    kind = weights_info.get("kind", "?")
    source = weights_info.get("source") or "?"
    if weights_info.get("published") and kind != "pretrained-clip":
        return published_banner(weights_info), weights_info.get("warning")
    what = {"random": "random initialisation", "official": "official DFER-CLIP checkpoint",
            "dferclip": "dferclip checkpoint", "fineclipper": "FineCLIPER checkpoint (dferclip re-implementation)",
            "pretrained-clip": "pretrained CLIP (zero-shot towers)",
            "official-emoclip": "official EmoCLIP checkpoint"}.get(kind, kind)
    text = f"{what}: {source}"
    if weights_info.get("epoch") is not None:
        text += f", epoch {weights_info['epoch']}"
    if weights_info.get("best_acc") is not None:
        text += f", best accuracy {weights_info['best_acc']:.2f}"
    warning = weights_info.get("warning")
    if not weights_info.get("trained", False):
        warning = warning or UNTRAINED_WARNING
        if kind == "pretrained-clip":
            warning = "the learned prompts and temporal model are untrained: use zero-shot scoring; " + warning
    return text, warning


def published_banner(facts: dict) -> str:
    """What published weights are: title, dataset and fold, source, host, licences, the paper's figures."""
    p, lic = facts.get("paper") or {}, facts.get("licence") or {}
    parts = [f"{facts.get('title', facts['published'])} (published weights '{facts['published']}')",
             f"source: {facts.get('origin', '?')}, {facts.get('host', '')}".rstrip(", ")]
    if lic:
        parts.append("licence: " + "; ".join(f"{k}: {v}" for k, v in lic.items()))
    if p.get("uar") is not None:
        parts.append(f"paper: UAR {p['uar']:.2f} / WAR {p['war']:.2f} ({p.get('scope', '')})")
    return " · ".join(parts)


def request_weights(key: str, *, public: bool = False) -> Optional[fetch.DownloadStatus]:
    """For a model picked in the app: None when ``key`` needs no download (not a published entry, served by
    open_clip, or cached), else :func:`dferclip.weights.fetch.request`'s status: a background fetch started or
    running, ``refused`` (public mode: not enabled by the operator, or over the disk budget) or ``failed``
    (offline). Returns at once."""
    entry = published.get_entry(key) if isinstance(key, str) else None
    if entry is None or entry.load_source or entry.host_kind == "hub" and not entry.host.get("file"):
        return None
    st = fetch.request(entry, public=public)
    return None if st.state == "ready" else st


def download_text(key: str) -> Optional[str]:
    """While published weights ``key`` download in this process: a sentence saying so, with progress."""
    if not fetch.in_progress(key):
        return None
    entry = published.get_entry(key)
    return f"{entry.title if entry else key}: {fetch.status(key).text}"


class ModelRegistry:
    """Models on offer and the loaded ones (lazily, thread-safely, at most ``max_loaded`` at a time).

    Loading one model (maybe a download) holds only that model's lock: requests for models already loaded
    are served meanwhile, and two requests for the same model wait for one load. With ``download_inline``
    False (the default when ``background``, i.e. the app) an uncached published entry is never downloaded by
    :meth:`get`: it starts a background fetch (:func:`request_weights`, limited by ``public``) and raises
    WeightsUnavailableError saying so."""

    def __init__(self, entries: list[ModelEntry], dev: torch.device | str | None = None, max_loaded: int = 3,
                 backend: str | None = None, background: bool = True, download_inline: Optional[bool] = None,
                 public: bool = False):
        if not entries:
            raise ValueError("a model registry needs at least one entry")
        self.entries = list(entries)
        self.device = torch.device(dev) if dev is not None else device()
        self.dtype = compute_dtype(self.device)
        self.backend = backends.requested_backend(backend)  # the image tower's (DFERCLIP_BACKEND, else auto)
        if zero_gpu.mode() is not None:  # ZeroGPU: no conversion in this process, where there is no GPU
            self.backend = "eager"
        self.background = background  # convert in a thread (the app) or before get() returns (batch jobs)
        self.download_inline = (not background) if download_inline is None else download_inline
        self.public = public  # downloads limited to the operator's list and disk budget
        self.max_loaded = max_loaded
        self._loaded: "OrderedDict[str, torch.nn.Module]" = OrderedDict()
        self._lock = threading.Lock()  # guards the dicts only, never held while loading
        self._loading: dict[str, threading.Lock] = {}
        self._conversions: list[threading.Thread] = []  # background backend conversions, joined by close()
        self._closed = threading.Event()
        self._slots_started = False  # ZeroGPU: start-up loads are over (see start_slots)

    @classmethod
    def discover(cls, explicit: str | None = None, **kwargs) -> "ModelRegistry":
        return cls(find_models(explicit), **kwargs)

    @property
    def default_key(self) -> str:
        return self.entries[0].key

    def choices(self) -> list[tuple[str, str]]:
        """(label, key) pairs, for a dropdown; an entry that cannot load here says so in its label."""
        return [(self._mark(e) + (" (unavailable here: offline)" if self.unavailable(e.key) else ""), e.key)
                for e in self.entries]

    @staticmethod
    def _mark(e: ModelEntry) -> str:
        """Published entries say whether they are cached (checked now: a download may have finished)."""
        entry = published.entry_for_source(e.key) if e.origin in ("published", "zero-shot") else None
        if entry is None:
            return e.label
        return f"{e.label} · {'cached' if published.is_cached(entry) else 'not downloaded yet'}"

    def unavailable(self, key: str) -> Optional[str]:
        """Why ``key`` cannot load here, when that is known without loading it (pretrained CLIP weights neither
        cached nor downloadable), else None."""
        s = str(key)
        if key in self._loaded or not s.startswith("pretrained:"):
            return None
        from .config import get_config
        from .weights.hub import pretrained_clip_source

        parts = s.split(":")
        tag = parts[2] if len(parts) > 2 else "openai"
        clip = get_config(parts[1]).clip if len(parts) > 1 and parts[1] else None
        if isinstance(clip, str) and pretrained_clip_source(clip, tag) is not None:
            return None
        return "its CLIP weights must be downloaded from the Hugging Face Hub, which cannot be reached from here"

    def entry(self, key: str) -> ModelEntry:
        for e in self.entries:
            if e.key == key:
                return e
        from .errors import CheckpointError

        shown = key[:80] if isinstance(key, str) else type(key).__name__
        raise CheckpointError(f"no model {shown!r} on offer here; choose one of the list")

    def is_loaded(self, key: str) -> bool:
        return key in self._loaded

    def get(self, key: str | None = None) -> torch.nn.Module:
        """The loaded model for ``key`` (default: the first entry). Raises DferclipError subclasses."""
        key = key or self.default_key
        self.entry(key)
        downloading = download_text(key)
        if downloading and key not in self._loaded:
            raise WeightsUnavailableError(f"The weights are still downloading ({downloading}). They are used as soon as "
                                          "they are ready; "
                                          "until then, pick another model.")
        if not self.download_inline and key not in self._loaded:
            self.raise_unless_cached(key)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per model; other models stay available meanwhile
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            model = load_model(key, device=self._load_device())
            model.requires_grad_(False)
            if zero_gpu.mode() is not None:
                zero_gpu.guard(model)  # its forwards run in GPU slots only
            log.info("loaded %s on %s (%s): %s", key, self.device, dtype_name(self.dtype), model.weights_info)
            self._accelerate(model)
            with self._lock:
                self._loaded[key] = model
                while len(self._loaded) > self.max_loaded:
                    dropped, _ = self._loaded.popitem(last=False)
                    log.info("unloaded %s", dropped)
            return model

    def key_of(self, model) -> Optional[str]:
        """The key a loaded model is served under (None: not one of this registry's)."""
        with self._lock:
            return next((k for k, m in self._loaded.items() if m is model), None)

    def _load_device(self) -> torch.device:
        """Where a model loads: the device, except on ZeroGPU after start-up, where a model moved to CUDA
        outside a GPU slot would not reach the workers; it loads on the CPU and each worker moves it."""
        return torch.device("cpu") if self._slots_started else self.device

    def start_slots(self, keys: Optional[list[str]] = None) -> list[str]:
        """With a GPU boundary in force (:mod:`dferclip.zero_gpu`): serve this registry's models to GPU slots, and
        load now, on the device, the models on offer that need no download (the default first, at most
        ``max_loaded``): ZeroGPU moves to CUDA what the process placed there at start-up. Returns their keys."""
        zero_gpu.serve_models(self.get, self.key_of, self.device)
        if zero_gpu.mode() is None or self._slots_started:
            return []
        loaded = []
        for key in keys if keys is not None else [e.key for e in self.entries]:
            if len(loaded) >= self.max_loaded:
                break
            try:
                entry = published.get_entry(key)
                cached = entry is None or published.is_cached(entry)
                if cached and not self.unavailable(key):
                    self.get(key)
                    loaded.append(key)
            except DferclipError as e:
                log.info("not loaded at start-up: %s (%s)", key, e)
        self._slots_started = True
        log.info("GPU slots (%s): loaded at start-up on %s: %s", zero_gpu.mode(), self.device, ", ".join(loaded))
        return loaded

    def raise_unless_cached(self, key: str) -> None:
        """Nothing when ``key`` loads without a download; else start its background fetch (when allowed) and
        raise WeightsUnavailableError saying what happens."""
        st = request_weights(key, public=self.public)
        if st is None:
            return
        entry = published.get_entry(key)
        if st.state in ("refused", "failed"):
            raise WeightsUnavailableError(st.error or st.text)
        raise WeightsUnavailableError(f"{entry.title}: the weights are not on this server yet; downloading them "
                                      f"started in the background ({st.text}). They are used as soon as they are "
                                      "ready; until then, pick another model.")

    def _accelerate(self, model) -> None:
        if self.backend == "eager" or self._closed.is_set():
            return
        run = functools.partial(backends.accelerate, model, self.backend, dev=self.device, dtype=self.dtype,
                                stop=self._closed)
        if not self.background:
            run()
            return
        # not a daemon, even when an app's (daemon) worker thread starts it: exiting mid-conversion aborts the
        # process in the converter's C++ threads ("terminate called without an active exception"); close() joins it
        with self._lock:  # started under the lock, so close() either sees it alive or stops it from starting
            if self._closed.is_set():
                return
            thread = threading.Thread(target=run, name=CONVERSION_THREAD, daemon=False)
            thread.start()
            self._conversions = [t for t in self._conversions if t.is_alive()] + [thread]

    def conversions(self) -> list[threading.Thread]:
        """The background conversions still running."""
        with self._lock:
            return [t for t in self._conversions if t.is_alive()]

    def close(self, timeout: float | None = None) -> bool:
        """Start no more conversions, abandon running ones at their next step and wait for them (at most
        ``timeout`` seconds). True when none is left running. Loaded models stay usable (eagerly, unless their
        conversion had finished)."""
        with self._lock:
            self._closed.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self.conversions():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.conversions()
