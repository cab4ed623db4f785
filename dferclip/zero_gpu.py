"""The GPU boundary of a ZeroGPU Space, and a stand-in that checks it on any machine.

On Hugging Face ZeroGPU (``SPACES_ZERO_GPU`` set) a function decorated with ``spaces.GPU`` runs in a forked
GPU worker: its arguments are pickled into the worker and its result, or each item a generator yields, is
pickled back; the worker moves to CUDA the models the process moved there at start-up, never objects that
arrive pickled; outside a decorated function there is no CUDA. So the app keeps to these rules:

- a decorated function takes a model *key* (and paths, strings, small tensors), never a model: :func:`run`
  and :func:`run_iter` send ``fn(model, *args)`` across as ``(key, fn, args)`` and the worker looks the model
  up by key (:func:`serve_models`) and places it on the device;
- CPU work (decoding, face detection, face mesh, tokenization) happens before the call, outside the slot;
- what comes back is small (probabilities, embeddings, maps at the patch grid) and on the CPU;
- every placement on the model device goes through :func:`place`, which refuses to run outside a slot while
  a boundary is in force, so device work outside a decorated function fails loudly, with a message;
- each call asks for a ``duration`` estimated from its work (``fn.gpu_seconds(*args)``), not a fixed one.

``DFERCLIP_GPU_BOUNDARY=check`` puts in force a stand-in of ``spaces.GPU`` that enforces the same boundary in
this process, on a CPU: every crossing is pickled both ways (no ``torch.nn.Module`` may cross), bounded in
size, and device work outside a decorated function is refused. The tests drive the running app through it;
an operator can run their own Space with it before deploying. Without ZeroGPU or the stand-in, :func:`run`
is a plain call and nothing is pickled.
"""
from __future__ import annotations

import functools
import inspect
import io
import logging
import os
import pickle
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from .errors import DferclipError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BOUNDARY_ENV = "DFERCLIP_GPU_BOUNDARY"
MAX_ARGS_BYTES = 96 * 1024**2  # what the stand-in lets into a slot: a clip's frames and renders fit
MAX_RESULT_BYTES = 4 * 1024**2  # what it lets out, per call or per yielded item
MAX_DURATION_S = 120  # the longest slot a call may ask for (a Space's visitors get a few minutes a day)
DEFAULT_DURATION_S = 30


class GpuBoundaryError(DferclipError):
    """Something broke ZeroGPU's rules: a model crossed into a GPU function, a crossing was too big, or
    device work ran outside a GPU function."""


def mode() -> Optional[str]:
    """``"zero"`` on ZeroGPU (with ``spaces`` installed), ``"check"`` with the stand-in, else None."""
    if os.environ.get(BOUNDARY_ENV, "").strip().lower() == "check":
        return "check"
    if os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in {"1", "true", "yes"}:
        import importlib.util

        if importlib.util.find_spec("spaces") is not None:
            return "zero"
        log.warning("SPACES_ZERO_GPU is set but the spaces package is not installed; running without it")
    return None


# --- inside or outside a slot -----------------------------------------------------------------------------
_slot = threading.local()


def inside() -> bool:
    return getattr(_slot, "depth", 0) > 0


@contextmanager
def _in_slot() -> Iterator[None]:
    _slot.depth = getattr(_slot, "depth", 0) + 1
    try:
        yield
    finally:
        _slot.depth -= 1


def require(what: str) -> None:
    """Refuse ``what`` (device work) outside a GPU function while a boundary is in force."""
    if mode() is not None and not inside():
        raise GpuBoundaryError(f"{what} ran outside a GPU function: on ZeroGPU there is no GPU there. "
                               "Send the work through dferclip.zero_gpu.run.")


def place(x, dev: torch.device | str):
    """``x.to(dev)`` (a tensor or a module), the one way onto the model device; refused outside a slot while a
    boundary is in force (:func:`require`)."""
    require("moving data to the model device")
    return x.to(dev)


# --- models by key -----------------------------------------------------------------------------------------
_served: dict[str, Any] = {"get": None, "key_of": None, "device": None}


def serve_models(get: Callable[[str], torch.nn.Module], key_of: Callable[[torch.nn.Module], Optional[str]],
                 device: torch.device) -> None:
    """Where GPU functions find models: ``get(key)`` loads or returns one, ``key_of(model)`` names one (None:
    not served), ``device`` is where they run. The app's registry calls this when it is made."""
    import torch

    _served.update(get=get, key_of=key_of, device=torch.device(device))


def model_by_key(key: str) -> torch.nn.Module:
    """Inside a slot: the served model ``key``, on the device (a model loaded after start-up is moved there in
    the worker, which keeps it while it lives)."""
    if _served["get"] is None:
        raise GpuBoundaryError("no models are served to GPU functions (dferclip.zero_gpu.serve_models)")
    model = _served["get"](key)
    dev = _served["device"]
    first = next(model.parameters(), None)
    if first is not None and first.device != dev:
        model = place(model, dev)
    return model


def guard(model: torch.nn.Module) -> torch.nn.Module:
    """Make every forward of ``model`` and its parts refused outside a GPU slot (:func:`require`), so device
    work that bypasses :func:`run` fails with a message instead of reaching an absent GPU."""
    def check(module, args):
        require(f"{type(module).__name__}.forward")

    for m in model.modules():
        m.register_forward_pre_hook(check)
    return model


def _key_of(model) -> Optional[str]:
    return _served["key_of"](model) if _served["key_of"] is not None else None


# --- the decorator --------------------------------------------------------------------------------------
def gpu(fn: Callable | None = None, *, duration: int | Callable = 60):
    """``spaces.GPU(duration=...)`` on ZeroGPU, the checking stand-in with ``DFERCLIP_GPU_BOUNDARY=check``, the
    function itself elsewhere. ``duration``: seconds, or a function of the call's arguments giving them.
    The mode is read when a call is made, so tests can switch it."""
    if fn is None:
        return functools.partial(gpu, duration=duration)
    zero: dict[str, Callable] = {}
    if mode() == "zero":  # decorated before launch: spaces reports its GPU functions at start-up
        _spaces(fn, duration, zero)

    checked = _checked_iter if inspect.isgeneratorfunction(fn) else _checked

    @functools.wraps(fn)
    def dispatch(*args, **kwargs):
        m = mode()
        if m == "check":
            return checked(fn, duration, args, kwargs)
        if m == "zero":
            return _spaces(fn, duration, zero)(*args, **kwargs)
        return fn(*args, **kwargs)
    return dispatch


def _spaces(fn: Callable, duration, cache: dict) -> Callable:
    """``spaces.GPU`` around ``fn`` marked as inside the slot in the worker (made once per function)."""
    if "fn" not in cache:
        import spaces

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def marked(*args, **kwargs):
                yield from _iterate_inside(fn(*args, **kwargs))
        else:
            @functools.wraps(fn)
            def marked(*args, **kwargs):
                with _in_slot():
                    return fn(*args, **kwargs)
        cache["fn"] = spaces.GPU(duration=_seconds_of(duration))(marked)
    return cache["fn"]


def _iterate_inside(gen) -> Iterator:
    while True:
        with _in_slot():
            try:
                item = next(gen)
            except StopIteration:
                return
        yield item


def _seconds_of(duration) -> Callable:
    """``duration`` as a function of the call's arguments, bounded to (1, MAX_DURATION_S] seconds."""
    def seconds(*args, **kwargs) -> int:
        s = duration(*args, **kwargs) if callable(duration) else duration
        return int(min(max(float(s), 1.0), MAX_DURATION_S))
    return seconds


# --- the checking stand-in ---------------------------------------------------------------------------------
class _NoModels(pickle.Pickler):
    def reducer_override(self, obj):
        import torch

        if isinstance(obj, torch.nn.Module):
            raise GpuBoundaryError(f"a {type(obj).__name__} model crosses the GPU boundary: pass its key")
        return NotImplemented


def _cross(value, limit: int, what: str):
    """``value`` pickled and unpickled as ZeroGPU's queues do, refused when it holds a model or is too big."""
    buf = io.BytesIO()
    try:
        _NoModels(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except GpuBoundaryError:
        raise
    except Exception as e:
        raise GpuBoundaryError(f"{what} cannot be pickled into a GPU worker: {e}") from e
    size = buf.tell()
    if size > limit:
        raise GpuBoundaryError(f"{what} is {size / 1e6:.1f} MB; a GPU function's crossing is bounded to "
                               f"{limit / 1e6:.0f} MB")
    stats.record(what, size)
    return pickle.loads(buf.getvalue())


class _Stats:
    """What crossed the stand-in's boundary (read by tests)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        self.calls: dict[str, int] = {}
        self.largest: dict[str, int] = {}
        self.durations: dict[str, int] = {}

    def record(self, what: str, size: int) -> None:
        with self.lock:
            self.largest[what] = max(self.largest.get(what, 0), size)

    def called(self, name: str, seconds: int) -> None:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            self.durations[name] = seconds


stats = _Stats()


def _enter(fn, duration, args, kwargs):
    name = getattr(fn, "__qualname__", str(fn))
    if fn in (_on_device.__wrapped__, _iter_on_device.__wrapped__):  # model work by key: name the work
        name += f"({getattr(args[1], '__name__', args[1])})"
    seconds = _seconds_of(duration)(*args, **kwargs)
    stats.called(name, seconds)
    return name, _cross((args, kwargs), MAX_ARGS_BYTES, f"the arguments of {name}")


def _checked(fn, duration, args, kwargs):
    name, (args, kwargs) = _enter(fn, duration, args, kwargs)
    with _in_slot():
        result = fn(*args, **kwargs)
    return _cross(result, MAX_RESULT_BYTES, f"the result of {name}")


def _checked_iter(fn, duration, args, kwargs):
    name, (args, kwargs) = _enter(fn, duration, args, kwargs)
    for item in _iterate_inside(fn(*args, **kwargs)):
        yield _cross(item, MAX_RESULT_BYTES, f"an item {name} yields")


# --- model work by key ---------------------------------------------------------------------------------------
def _duration(key: str, fn: Callable, args: tuple, kwargs: dict) -> float:
    estimate = getattr(fn, "gpu_seconds", None)
    return estimate(*args, **kwargs) if estimate is not None else DEFAULT_DURATION_S


@gpu(duration=_duration)
def _on_device(key: str, fn: Callable, args: tuple, kwargs: dict):
    return fn(model_by_key(key), *args, **kwargs)


@gpu(duration=_duration)
def _iter_on_device(key: str, fn: Callable, args: tuple, kwargs: dict):
    yield from fn(model_by_key(key), *args, **kwargs)


def _key_for(model, fn) -> str:
    key = _key_of(model)
    if key is None:
        raise GpuBoundaryError(f"{getattr(fn, '__name__', fn)} needs a served model (one of the app's registry)")
    return key


def run(model: torch.nn.Module, fn: Callable, *args, **kwargs):
    """``fn(model, *args, **kwargs)`` in a GPU slot when a boundary is in force (the model sent by key, ``fn`` a
    module-level function, its result small and on the CPU), else called directly."""
    if mode() is None or inside():
        return fn(model, *args, **kwargs)
    return _on_device(_key_for(model, fn), fn, args, kwargs)


def run_iter(model: torch.nn.Module, fn: Callable, *args, **kwargs) -> Iterator:
    """:func:`run` for a generator function: each item crosses back as it is yielded."""
    if mode() is None or inside():
        return fn(model, *args, **kwargs)
    return _iter_on_device(_key_for(model, fn), fn, args, kwargs)


def estimate(seconds: Callable[..., float]):
    """Give a model function its slot estimate: ``seconds(*args, **kwargs)`` with the arguments after the model."""
    def mark(fn):
        fn.gpu_seconds = seconds
        return fn
    return mark
