"""Faster CPU backends for the CLIP image tower, which holds nearly all of a DFER-CLIP forward's work.

    from dferclip import backends
    used = backends.accelerate(model)        # DFERCLIP_BACKEND, else "auto"
    used.name, used.max_logit_delta          # "openvino", 4e-6 (on a probe clip, against torch eager fp32)

Backends (``DFERCLIP_BACKEND`` or ``--backend``):

- ``eager``: torch as is (the reference);
- ``compile``: ``torch.compile`` of the tower;
- ``openvino``: the tower exported with ``torch.export`` and compiled by OpenVINO for the CPU, fp32;
- ``int8``: torch dynamic int8 quantisation of the tower's Linear layers. Lossy: only when asked for;
- ``auto`` (default): the first backend of :data:`AUTO_ORDER` that is faithful and, on this machine, runs the
  tower at least :data:`AUTO_MIN_SPEEDUP` times faster than eager, on towers of real size (a test-size tower
  converts slower than it runs). The speed is timed once per machine and tower architecture (interleaved
  rounds on random frames, eager and the backend each at every size of :func:`frame_batch_sizes`) and compared
  at the frames per call each would run with (its fastest); the verdict, keyed with that size, is kept in
  ``DFERCLIP_CACHE/backend-speed.json``; delete it to time again. On this project's 2-core reference CPU
  OpenVINO measured 1.16-1.24x idle and 1.6-2.1x under load at 16 frames a call (``benchmarks/bench_backends.py``,
  BENCHMARKS.md).

Frames per tower call: :func:`frame_batch` gives the size the corpus and the timeline run the tower with, the
fastest per frame of :func:`frame_batch_sizes` as timed on this machine (kept in the same file), else
:data:`FRAME_BATCH`. Bigger is not always faster on a CPU: glibc serves allocations above its mmap threshold
(at most 32 MB) with fresh pages each time, so once a batch's activations pass it (ViT-B/32's MLP at about 54
frames) every call page-faults and zeroes them again (``benchmarks/bench_batching.py``).

ONNX Runtime is not offered: exporting to ONNX needs the ``onnx`` package, whose current release (1.23) needs
protobuf >= 6.31, while mediapipe pins protobuf < 5 here; OpenVINO converts the same ``torch.export`` graph.

A backend that is not installed, fails to convert, or (except ``int8``) moves a probe clip's logits by
more than :data:`FAITHFUL_ATOL` is skipped with a log line, and the tower stays torch eager. Backends only
apply on CPU in fp32 to DFER-CLIP's image tower; other model families and GPUs run eagerly. The converted
tower is a snapshot of the weights: once any tower parameter changes (training, ``load_state_dict``),
:func:`frame_function` notices, logs it and goes back to eager.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from . import files, logs

log = logging.getLogger(__name__)

BACKENDS = ("eager", "compile", "openvino", "int8")
CHOICES = BACKENDS + ("auto",)
LOSSY = frozenset({"int8"})
AUTO_ORDER = ("openvino",)  # faithful and faster than eager, measured (BENCHMARKS.md)
FAITHFUL_ATOL = 1e-3  # max |logit change| a default backend may cause
AUTO_MIN_PARAMS = 20_000_000  # auto leaves smaller towers eager (ViT-B/32's has 88 M parameters)
AUTO_MIN_SPEEDUP = 1.25  # auto keeps a backend only if it runs the tower at least this much faster here
SPEED_ROUNDS = 3  # interleaved timing rounds (after one warm-up) behind a speed verdict
PROBE_FRAMES = 4  # distinct random frames of the probe clip that checks a backend's logits
MAX_FRAMES = 1024  # largest frame batch an exported tower accepts
FRAME_BATCH = 32  # frames per tower call where no size was timed (GPUs, other model families, not yet timed)
BATCH_ROUNDS = 2  # interleaved timing rounds (after one warm-up) behind a frame-batch choice


class BackendUnavailable(RuntimeError):
    """The backend's package is missing or it cannot run this tower (the caller falls back to eager)."""


@dataclass
class Accelerated:
    """What :func:`accelerate` settled on. ``max_logit_delta``: on the probe clip, against eager fp32."""

    name: str
    requested: str
    setup_s: float = 0.0
    max_logit_delta: Optional[float] = None
    note: str = ""  # why the requested backend is not the one in use, when it is not
    speedup: Optional[float] = None  # auto: how much faster than eager this machine ran the tower
    frame_batch: Optional[int] = None  # auto: frames per tower call, the fastest timed for this backend here

    @property
    def lossy(self) -> bool:
        return self.name in LOSSY


@dataclass
class _Attached:
    info: Accelerated
    run: Callable[[torch.Tensor], torch.Tensor]  # (U, 3, S, S) model-input frames -> (U, D) features
    versions: tuple  # the tower parameters' in-place version counters when it was converted


_attached: "weakref.WeakKeyDictionary[torch.nn.Module, _Attached]" = weakref.WeakKeyDictionary()


def requested_backend(name: Optional[str] = None) -> str:
    """``name``, else ``DFERCLIP_BACKEND``, else ``auto``; checked against :data:`CHOICES`."""
    chosen = (name or os.environ.get("DFERCLIP_BACKEND", "") or "auto").strip().lower()
    if chosen not in CHOICES:
        raise ValueError(f"backend {chosen!r}: use one of {', '.join(CHOICES)}")
    return chosen


def installed() -> list[str]:
    """The backends whose packages are importable here (eager, compile and int8 come with torch)."""
    import importlib.util

    have = ["eager", "compile"]
    if importlib.util.find_spec("openvino") is not None:
        have.append("openvino")
    return have + ["int8"]


def image_tower(model) -> Optional[torch.nn.Module]:
    """The module a backend may replace: DFER-CLIP's CLIP image tower, whose output is the frame features."""
    return model.clip.visual if getattr(model, "family", None) == "dferclip" else None


def current(model) -> Accelerated:
    """The backend ``model`` runs its image tower with now."""
    attached = _attached.get(model)
    return attached.info if attached is not None else Accelerated("eager", "eager")


def accelerate(model, backend: Optional[str] = None, *, dev=None, dtype=None,
               atol: float = FAITHFUL_ATOL, stop: Optional[threading.Event] = None) -> Accelerated:
    """Run ``model``'s image tower through ``backend`` (default: :func:`requested_backend`) from now on.

    Returns what is in use, which is ``eager`` when the backend does not apply, is missing, fails or is not
    faithful (see the module docstring); never raises for those. Call it again after changing the weights.
    Once ``stop`` is set, the conversion is abandoned at its next step (eager, nothing attached).
    """
    requested = requested_backend(backend)
    _attached.pop(model, None)
    dev = torch.device(dev) if dev is not None else next(model.parameters()).device
    tower = image_tower(model)
    if requested == "eager":
        return Accelerated("eager", requested)
    reason = None
    if tower is None:
        reason = f"{getattr(model, 'family', type(model).__name__)} models run their towers eagerly"
    elif dev.type != "cpu" or (dtype is not None and dtype != torch.float32):
        reason = "backends apply to CPU fp32 only"
    elif requested == "auto" and sum(p.numel() for p in tower.parameters()) < AUTO_MIN_PARAMS:
        return Accelerated("eager", requested, note="tower too small to gain from a backend")
    if reason:
        log.log(logging.INFO if requested == "auto" else logging.WARNING, "backend %s: %s; using torch eager",
                requested, reason)
        return Accelerated("eager", requested, note=reason)
    notes = []

    def stopped() -> bool:
        if stop is not None and stop.is_set():
            notes.append("stopped before the conversion finished")
            return True
        return False

    for name in (AUTO_ORDER if requested == "auto" else (requested,)):
        if stopped():
            break
        start = time.perf_counter()
        versions = _versions(tower)
        frames = known_frame_batch(model, name)
        known = known_speedup(model, name, frames) if requested == "auto" and frames else None
        if known is not None and known < AUTO_MIN_SPEEDUP:  # timed before: not worth converting again
            notes.append(_too_slow(name, known))
            continue
        try:
            # a copy: the live tower keeps serving eager calls from other threads (the app) meanwhile
            snapshot = copy.deepcopy(tower).float().eval()
            run = _BUILDERS[name](snapshot, model.input_config.image_size, _cacheable(model))
            if stopped():
                break
            delta = probe_logit_delta(model, run)
            if not delta <= atol and getattr(run, "cached_in", None) is not None:  # a damaged cache entry
                log.warning("backend %s: the cached conversion in %s moved the logits by %.2g; converting again",
                            name, run.cached_in, delta)
                shutil.rmtree(run.cached_in, ignore_errors=True)
                run = _BUILDERS[name](snapshot, model.input_config.image_size, _cacheable(model))
                delta = probe_logit_delta(model, run)
        except Exception as e:  # a backend that cannot take this tower must not stop the model
            notes.append(f"{name} failed: {_short(e)}")
            quiet = requested == "auto" and isinstance(e, BackendUnavailable)  # auto: not installed is fine
            log.log(logging.INFO if quiet else logging.WARNING, "backend %s is not usable here (%s); using torch "
                    "eager", name, _short(e))
            continue
        if name not in LOSSY and not delta <= atol:
            notes.append(f"{name} moved the logits by {delta:.2g} > {atol:g}")
            log.warning("backend %s moved a probe clip's logits by %.2g (> %g); using torch eager", name, delta, atol)
            continue
        if stopped():
            break
        speedup = known
        if known is None and requested == "auto":
            try:
                speedup, frames = measure_speedup(model, name, run, stop=stop)
            except TimingStopped:
                pass  # stopped() says so below
        if stopped():
            break
        if speedup is not None and speedup < AUTO_MIN_SPEEDUP:
            notes.append(_too_slow(name, speedup))
            continue
        info = Accelerated(name, requested, time.perf_counter() - start, delta, speedup=speedup, frame_batch=frames)
        _attached[model] = _Attached(info, run, versions)
        log.log(logging.WARNING if info.lossy else logging.INFO, "image tower on %s (set up in %.1f s; max |logit "
                "change| on a probe clip %.2g%s)", name, info.setup_s, delta, ", lossy" if info.lossy else "")
        return info
    return Accelerated("eager", requested, note="; ".join(notes) or "no faithful backend installed")


def frame_function(model, dev=None, dtype=None):
    """``fn(frames, renders)`` -> per-frame features: ``model.frame_features``, through the accelerated tower
    when :func:`accelerate` attached one and it still applies (CPU, fp32, unchanged weights)."""
    attached = _active(model, dev, dtype)
    if attached is None:
        return model.frame_features
    return lambda frames, renders=None: attached.run(frames)


def in_use(model, dev=None, dtype=None) -> str:
    """The backend :func:`frame_function` runs for ``model`` on ``dev`` in ``dtype``."""
    attached = _active(model, dev, dtype)
    return "eager" if attached is None else attached.info.name


def _active(model, dev, dtype) -> Optional[_Attached]:
    attached = _attached.get(model)
    if attached is None:
        return None
    dev = torch.device(dev) if dev is not None else next(model.parameters()).device
    if dev.type != "cpu" or (dtype is not None and dtype != torch.float32):
        return None
    if _versions(image_tower(model)) != attached.versions:
        log.warning("the image tower's weights changed since it was converted to %s; using torch eager",
                    attached.info.name)
        _attached.pop(model, None)
        return None
    return attached


def probe_logit_delta(model, run: Callable[[torch.Tensor], torch.Tensor], seed: int = 0) -> float:
    """Max |logit change| of a probe clip (random frames) when ``run`` replaces the eager image tower."""
    cfg = model.input_config
    g = torch.Generator().manual_seed(seed)
    frames = cfg.normalize(torch.rand(PROBE_FRAMES, 3, cfg.image_size, cfg.image_size, generator=g))
    positions = (torch.arange(cfg.num_frames) % PROBE_FRAMES).unsqueeze(0)
    with torch.inference_mode():
        classes = model.class_embeddings()
        eager = model.score(model.embed_sequences(model.frame_features(frames), positions), classes)
        fast = model.score(model.embed_sequences(run(frames), positions), classes)
    return float((fast - eager).abs().max())


SPEED_FILE = "backend-speed.json"  # in the cache folder: speed verdicts and fastest frame batches by machine and tower


def _speed_verdicts() -> dict:
    try:
        verdicts = json.loads((files.cache_dir() / SPEED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return verdicts if isinstance(verdicts, dict) else {}


def frame_batch_sizes(num_frames: int) -> tuple[int, ...]:
    """Frames per tower call that are timed: half a clip, one, two and four clips of ``num_frames``."""
    return tuple(sorted({max(1, num_frames // 2), num_frames, 2 * num_frames, 4 * num_frames}))


class TimingStopped(RuntimeError):
    """The ``stop`` event of a timing was set (a registry closing): it was abandoned."""


def time_frame_batches(runs: dict[str, Callable[[torch.Tensor], torch.Tensor]], frames: torch.Tensor,
                       sizes: Sequence[int], rounds: int = BATCH_ROUNDS,
                       stop: Optional[threading.Event] = None) -> dict[str, dict[int, float]]:
    """Seconds a frame that each of ``runs`` takes at each of ``sizes`` frames a call (on the first frames of
    ``frames``): medians of interleaved rounds after a warm-up round, so load from other processes hits every
    run and size alike. Raises :class:`TimingStopped` once ``stop`` is set."""
    times: dict[str, dict[int, list]] = {name: {n: [] for n in sizes} for name in runs}
    with torch.inference_mode():
        for k in range(rounds + 1):
            for n in sizes:
                for name, run in runs.items():
                    if stop is not None and stop.is_set():
                        raise TimingStopped("stopped")
                    t0 = time.perf_counter()
                    run(frames[:n])
                    if k:  # round 0 warms every size up (kernels and buffers are made per shape)
                        times[name][n].append((time.perf_counter() - t0) / n)
    return {name: {n: statistics.median(t) for n, t in by_size.items()} for name, by_size in times.items()}


def fastest(per_frame: dict[int, float]) -> int:
    """The size with the least time a frame (the smaller of equals)."""
    return min(per_frame, key=lambda n: (per_frame[n], n))


def measure_frame_batches(model, runs: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                          stop: Optional[threading.Event] = None) -> dict[str, dict[int, float]]:
    """Time ``runs`` (backend name -> tower function) at every size of :func:`frame_batch_sizes` now, on random
    frames; keep each one's fastest size in ``DFERCLIP_CACHE``; return the seconds a frame by backend and size."""
    cfg = model.input_config
    sizes = frame_batch_sizes(cfg.num_frames)
    g = torch.Generator().manual_seed(1)
    frames = cfg.normalize(torch.rand(max(sizes), 3, cfg.image_size, cfg.image_size, generator=g))
    per_frame = time_frame_batches(runs, frames, sizes, stop=stop)
    verdicts = _speed_verdicts()
    for name, by_size in per_frame.items():
        log.info("%s runs this tower fastest at %d frames a call here (%s a frame)", name, fastest(by_size),
                 ", ".join(f"{n}: {s * 1000:.1f} ms" for n, s in by_size.items()))
        verdicts[_batch_key(model, name)] = {"frames": fastest(by_size), "ms_per_frame": {
            str(n): round(s * 1000, 3) for n, s in by_size.items()}, "measured": _now()}
    _keep(verdicts)
    return per_frame


def known_frame_batch(model, name: str) -> Optional[int]:
    """The fastest frames per call timed for ``name`` on this tower architecture and machine, or None."""
    known = _speed_verdicts().get(_batch_key(model, name))
    if isinstance(known, dict) and isinstance(known.get("frames"), int) and known["frames"] > 0:
        return known["frames"]
    return None


def frame_batch(model, dev=None, dtype=None, *, measure: bool = False) -> int:
    """Frames per image-tower call for ``model`` on ``dev`` in ``dtype``, with the backend it runs there: the
    fastest size timed on this machine; with ``measure``, timed now if it never was (three passes over
    :func:`frame_batch_sizes`: about 20 s for ViT-B/32 on 2 cores, once per machine and tower architecture);
    else :data:`FRAME_BATCH`. GPUs, other dtypes and other model families get :data:`FRAME_BATCH`."""
    dev = torch.device(dev) if dev is not None else next(model.parameters()).device
    if image_tower(model) is None or dev.type != "cpu" or (dtype is not None and dtype != torch.float32):
        return FRAME_BATCH
    attached = _active(model, dev, dtype)
    if attached is not None and attached.info.frame_batch:
        return attached.info.frame_batch
    name = "eager" if attached is None else attached.info.name
    known = known_frame_batch(model, name)
    if known is not None or not measure:
        return known or FRAME_BATCH
    per_frame = measure_frame_batches(model, {name: model.frame_features if attached is None else attached.run})
    return fastest(per_frame[name])


def known_speedup(model, name: str, frames: int) -> Optional[float]:
    """``name``'s kept speed-up over eager with ``name`` at ``frames`` frames a call (and eager at its fastest,
    timed together) for this tower architecture on this machine, or None if never timed."""
    known = _speed_verdicts().get(_speed_key(model, name, frames))
    if isinstance(known, dict) and isinstance(known.get("speedup"), (int, float)):
        return float(known["speedup"])
    return None


def measure_speedup(model, name: str, run: Callable[[torch.Tensor], torch.Tensor],
                    stop: Optional[threading.Event] = None) -> tuple[float, int]:
    """Time ``run`` and the eager tower now at every size of :func:`frame_batch_sizes`; keep both fastest sizes
    and ``name``'s verdict (its time a frame at its fastest size against eager's at eager's) in ``DFERCLIP_CACHE``.
    Returns the speed-up and the frames a call ``name`` runs fastest with."""
    per_frame = measure_frame_batches(model, {"eager": model.frame_features, name: run}, stop=stop)
    frames, eager_frames = fastest(per_frame[name]), fastest(per_frame["eager"])
    speedup = per_frame["eager"][eager_frames] / max(per_frame[name][frames], 1e-12)
    log.info("backend %s at %d frames a call runs this tower %.2fx as fast as eager at %d on this machine",
             name, frames, speedup, eager_frames)
    verdicts = _speed_verdicts()
    verdicts[_speed_key(model, name, frames)] = {"speedup": round(speedup, 3), "eager_frames": eager_frames,
                                                 "measured": _now()}
    _keep(verdicts)
    return speedup, frames


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _keep(verdicts: dict) -> None:
    path = files.cache_dir() / SPEED_FILE
    try:
        files.write_json(path, verdicts)
    except OSError as e:  # a read-only cache only costs the timing next time
        log.warning("could not keep the speed verdicts in %s: %s", path, e)


def _too_slow(name: str, speedup: float) -> str:
    log.info("backend %s: %.2fx eager's speed on this machine (< %gx); using torch eager", name, speedup,
             AUTO_MIN_SPEEDUP)
    return f"{name} ran the tower only {speedup:.2f}x as fast as eager here (auto needs {AUTO_MIN_SPEEDUP:g}x)"


def _speed_key(model, name: str, frames: Optional[int] = None) -> str:
    """What a tower's speed depends on: the backend, the architecture (parameter names and shapes, not values),
    the input size, the threads, this CPU and the library versions; and the frames a call, when given."""
    tower = image_tower(model)
    h = hashlib.blake2b(digest_size=12)
    for pname, tensor in tower.state_dict().items():
        h.update(f"{pname}{tuple(tensor.shape)}".encode())
    return "|".join([name, h.hexdigest(), str(model.input_config.image_size), str(model.input_config.num_frames),
                     f"{torch.get_num_threads()} threads", cpu_name(), f"torch {torch.__version__}",
                     _backend_version(name)] + ([f"{frames} frames a call"] if frames else []))


def _batch_key(model, name: str) -> str:
    return f"{_speed_key(model, name)}|fastest frames a call"


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """This CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _backend_version(name: str) -> str:
    if name == "openvino":
        import importlib.metadata

        try:
            return f"openvino {importlib.metadata.version('openvino')}"
        except importlib.metadata.PackageNotFoundError:
            return "openvino ?"
    return name


# --- the backends: each turns a copy of the tower into (U, 3, S, S) -> (U, D), or raises ------
def _build_compile(tower, size: int, cache: bool):
    compiled = torch.compile(tower, dynamic=True)
    with torch.inference_mode():  # compiles now, not on the first clip
        compiled(torch.zeros(2, 3, size, size))
    return _inference(compiled)


def _build_int8(tower, size: int, cache: bool):
    with warnings.catch_warnings():  # torch.ao's deprecation notice; the API works in this torch
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(tower, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return _inference(quantized)


def _inference(module):
    def run(frames: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(frames.float())
    return run


_EXPORT_LOCK = threading.RLock()  # torch.export (and converting its program) keeps tracing state in globals


def _exported(tower, size: int):
    """The tower as a torch.export program with a dynamic frame count (one export at a time in this process:
    two models' background conversions at once failed with torch.fx's KeyError: 'custom')."""
    from torch.export import Dim, export

    example = torch.zeros(2, 3, size, size)
    with _EXPORT_LOCK, torch.no_grad():
        return export(tower, (example,), dynamic_shapes=({0: Dim("frames", min=1, max=MAX_FRAMES)},))


def _import_openvino():
    """``openvino``. Importing it imports absl, whose log handler keeps the ``sys.stderr`` of that moment and
    closes it when logging shuts handlers down (``logging.config.dictConfig``: uvicorn, at every Gradio launch)
    if it is no longer ``sys.stderr`` by then; in a test session that closed pytest's own capture file. When
    this import brings absl in, its handler writes to the current ``sys.stderr`` instead, and never closes it."""
    absl_before = "absl.logging" in sys.modules
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable("openvino is not installed (pip install openvino)") from None
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None and not absl_before:
        absl_logging.get_absl_handler().python_handler.stream = logs.CurrentStderr()
    return openvino


def _build_openvino(tower, size: int, cache: bool):
    ov = _import_openvino()
    core = ov.Core()
    folder = files.cache_dir() / "openvino" / _fingerprint(tower, size, ov.__version__) if cache else None
    settings = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    cached_in = None
    if folder is not None and folder.is_dir():
        try:
            # checked before OpenVINO parses it: a damaged file read in-process can corrupt the heap (a truncated
            # tower.xml made a later, unrelated call segfault)
            problem = _damage(folder)
            if problem:
                raise ValueError(problem)
            compiled = core.compile_model(core.read_model(str(folder / "tower.xml")), "CPU", settings)
            cached_in = folder
        except Exception as e:  # a damaged cache entry (cut short, a disk fault): convert again
            log.warning("backend openvino: the cached conversion in %s cannot be read (%s); converting again",
                        folder, _short(e))
            shutil.rmtree(folder, ignore_errors=True)
    if cached_in is None:
        with _EXPORT_LOCK:  # the conversion runs the exported program's decompositions: traced too
            converted = ov.convert_model(_exported(tower, size), input=[ov.PartialShape([-1, 3, size, size])])
        if folder is not None:
            try:
                def write(tmp: str) -> None:
                    ov.save_model(converted, os.path.join(tmp, "tower.xml"), compress_to_fp16=False)
                    _write_digests(Path(tmp))

                _save_folder(folder, write)
            except OSError as e:  # a full disk costs the conversion next time, not this one
                log.warning("backend openvino: cannot keep the conversion in %s (%s)", folder, _short(e))
        compiled = core.compile_model(converted, "CPU", settings)
    request = compiled.create_infer_request()
    lock = threading.Lock()  # one infer request, callers from several threads (the app)

    def run(frames: torch.Tensor) -> torch.Tensor:
        with lock:
            out = request.infer({0: frames.detach().float().contiguous().numpy()})[0]
            return torch.from_numpy(out.copy())
    run.cached_in = cached_in
    return run


_BUILDERS = {"compile": _build_compile, "openvino": _build_openvino, "int8": _build_int8}


# --- helpers ---------------------------------------------------------------------------------
def _cacheable(model) -> bool:
    """Conversions of a checkpoint's weights are kept in the cache; random (untrained) ones differ every load."""
    return model.weights_info.get("kind") != "random"


def _versions(tower) -> tuple:
    return tuple(p._version for p in tower.parameters())


def _fingerprint(tower, size: int, backend_version: str) -> str:
    """Cache key of a converted tower: its weights, input size and the converter's versions."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{size}|{torch.__version__}|{backend_version}".encode())
    for name, tensor in tower.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


DIGESTS = "digests.json"  # sha256 of each file of a kept conversion, written with it


def _write_digests(folder: Path) -> None:
    sums = {p.name: files.sha256_of(p) for p in sorted(folder.iterdir()) if p.name != DIGESTS}
    (folder / DIGESTS).write_text(json.dumps(sums, indent=1))


def _damage(folder: Path) -> Optional[str]:
    """What is wrong with a kept conversion (its files against the digests written with it), or None."""
    try:
        sums = json.loads((folder / DIGESTS).read_text())
    except (OSError, ValueError):
        return "no digests (written by an older version, or cut short)"
    for name, digest in sums.items():
        try:
            if files.sha256_of(folder / name) != digest:
                return f"{name} differs from its digest"
        except OSError:
            return f"{name} is missing"
    return None if "tower.xml" in sums else "no tower.xml"


def _save_folder(folder, write: Callable[[str], None]) -> None:
    """Write a multi-file conversion atomically (:func:`dferclip.files.atomic_folder`); another process that
    finished the same conversion first is fine."""
    try:
        with files.atomic_folder(folder) as tmp:
            write(str(tmp))
    except OSError:  # FileExistsError included
        if not folder.is_dir():
            raise


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"
