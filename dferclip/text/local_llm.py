"""Descriptions without a key: a small open instruct model run on this machine through ``transformers``.

- The models are data (``local_models.json``: Hub repo id, pinned revision, licence, size); an operator may add
  entries with a file of the same format named by ``DFERCLIP_LOCAL_LLMS``. Only registered names load, so a
  visitor cannot make the server download an arbitrary repository.
- Weights come from the Hugging Face Hub through its cache (``HF_HUB_CACHE`` / ``HF_HOME``; on a Space with
  persistent storage that is under ``/data``), once; afterwards they load offline. Offline or unreachable with
  nothing cached, :func:`model_folder` fails within about a second (before importing ``transformers``).
- Only safetensors weights and no remote code are loaded.
- :class:`LocalChat` is the client :func:`dferclip.text.llm.generate` uses when ``LLMSettings.backend`` is
  ``"local"``: the tokenizer's chat template, greedy (temperature 0) or sampled decoding, a bounded number of
  new tokens, on the project's device, and a cancel flag checked after every token. Its replies go through the
  same parsing and checks as a server's.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

from .. import zero_gpu
from ..errors import LLMConfigError, LLMConnectionError

log = logging.getLogger(__name__)

REGISTRY_PATH = Path(__file__).resolve().parent / "local_models.json"
# What a snapshot needs: configs, tokenizer files, chat templates, safetensors weights (never pickles).
SNAPSHOT_FILES = ["*.json", "*.txt", "*.jinja", "*.model", "*.safetensors"]
TOP_P = 0.9  # nucleus sampling when temperature > 0 and the model names none
# A reply's token budget per description asked for (official DFER-CLIP descriptions take 15-25 tokens; CLIP reads
# at most 77), plus room for a list's framing: bounds the cost of a model that does not stop.
TOKENS_PER_DESCRIPTION, TOKENS_FRAMING = 48, 16


@dataclass(frozen=True)
class LocalModelSpec:
    name: str
    repo_id: str
    revision: Optional[str] = None  # a pinned commit; None: the repo's main branch
    licence: str = ""
    parameters: Optional[int] = None
    download: str = ""
    source: str = ""

    def describe(self) -> str:
        return f"local model {self.name} ({self.repo_id})"


def _read_registry(path: Path) -> tuple[dict[str, LocalModelSpec], Optional[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        specs = {name: LocalModelSpec(name=name, **entry) for name, entry in data["models"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LLMConfigError(f"cannot read the local model registry {path}: {e}") from None
    return specs, data.get("default")


@lru_cache(maxsize=4)
def _registry(extra: Optional[str]) -> tuple[dict[str, LocalModelSpec], str]:
    specs, default = _read_registry(REGISTRY_PATH)
    if extra:
        more, more_default = _read_registry(Path(extra))
        specs = {**specs, **more}
        default = more_default or default
    return specs, default


def local_models() -> dict[str, LocalModelSpec]:
    """The registered local models (the package's, then ``DFERCLIP_LOCAL_LLMS``'s)."""
    return _registry(os.environ.get("DFERCLIP_LOCAL_LLMS") or None)[0]


def default_local_model() -> str:
    return _registry(os.environ.get("DFERCLIP_LOCAL_LLMS") or None)[1]


def get_local_model(name: Optional[str] = None) -> LocalModelSpec:
    specs = local_models()
    name = name or default_local_model()
    if name not in specs:
        raise LLMConfigError(f"unknown local model {name!r}; known: {', '.join(specs)}")
    return specs[name]


def reply_budget(max_new_tokens: int, n: int) -> int:
    """The most new tokens for a reply with ``n`` descriptions (never more than ``max_new_tokens``)."""
    return max(1, min(int(max_new_tokens), TOKENS_PER_DESCRIPTION * max(1, n) + TOKENS_FRAMING))


def provenance(spec: LocalModelSpec) -> dict:
    """What a generation records about the model that wrote it."""
    return {"backend": "local", "model": spec.repo_id, "revision": spec.revision, "licence": spec.licence}


# --- fetching ------------------------------------------------------------------------------------
def _hub_cache_dir() -> Optional[str]:
    """``HF_HUB_CACHE`` as it is now (huggingface_hub reads it once, at import); None: its default."""
    return os.environ.get("HF_HUB_CACHE") or None


def is_downloaded(spec: LocalModelSpec) -> bool:
    """Whether the model's snapshot is in the local Hub cache (looked up on disk only, never on the network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(spec.repo_id, revision=spec.revision, allow_patterns=SNAPSHOT_FILES,
                          cache_dir=_hub_cache_dir(), local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return False
    return True


def model_folder(spec: LocalModelSpec) -> Path:
    """The model's snapshot folder in the Hub cache, downloaded on first use (with huggingface_hub's progress
    bars). Offline or unreachable: the cache only, and a clear :class:`LLMConnectionError` if it is not there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from ..weights.hub import hub_reachable

    online = hub_reachable()
    try:
        folder = snapshot_download(spec.repo_id, revision=spec.revision, allow_patterns=SNAPSHOT_FILES,
                                   cache_dir=_hub_cache_dir(), local_files_only=not online)
    except LocalEntryNotFoundError:
        why = "the Hub cannot be reached" if online else "the Hub cannot be reached (offline or HF_HUB_OFFLINE=1)"
        raise LLMConnectionError(
            f"{spec.describe()} is not (completely) in the local Hugging Face cache and {why}. Run "
            f"`python -m dferclip describe generate --backend local ...` once on a connected machine (it downloads "
            f"{spec.download or 'the model'}), or configure an OpenAI-compatible server"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise LLMConfigError(f"{spec.describe()}: no such Hugging Face repo or revision {spec.revision!r}") from None
    except (HfHubHTTPError, OSError) as e:
        raise LLMConnectionError(f"downloading {spec.describe()} failed: {type(e).__name__}; try again") from None
    return Path(folder)


# --- running -------------------------------------------------------------------------------------
class LocalChat:
    """A loaded tokenizer + causal LM that answers chat messages (one generation at a time)."""

    def __init__(self, spec: LocalModelSpec, tokenizer, model):
        self.spec = spec
        self.tokenizer = tokenizer
        self.model = model
        self._lock = threading.Lock()

    @classmethod
    def load(cls, spec: LocalModelSpec, device=None) -> LocalChat:
        """Fetch (or find in the cache) and load ``spec`` on ``device`` (default: the project's device)."""
        from .. import runtime

        folder = model_folder(spec)  # fails fast offline, before the slow import below
        dev = runtime.device() if device is None else device
        dtype = runtime.compute_dtype(dev)
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise LLMConfigError("the local model needs transformers (pip install -r requirements.txt)") from None
        t0 = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True,
                                                         trust_remote_code=False)
        except (OSError, ValueError, KeyError) as e:
            raise LLMConfigError(f"cannot load {spec.describe()} from {folder}: {str(e).splitlines()[0]}") from None
        if not getattr(tokenizer, "chat_template", None):
            raise LLMConfigError(f"{spec.describe()} has no chat template: it is not an instruct (chat) model")
        log.info("loaded %s on %s in %.1f s", spec.describe(), dev, time.perf_counter() - t0)
        return cls(spec, tokenizer, model.to(dev).eval())

    def describe(self) -> str:
        return self.spec.describe()

    def reply(self, messages: Sequence[dict], *, temperature: float = 0.0, max_new_tokens: int = 200,
              cancel: Optional[threading.Event] = None) -> str:
        """The model's answer to ``messages`` (chat format). ``temperature`` 0: greedy; ``cancel``: a set event
        stops generation after the current token, or the wait for another caller's generation (the caller
        decides what a cut reply means)."""
        import torch

        if max_new_tokens < 1:
            raise LLMConfigError("max_new_tokens must be at least 1")
        tok = self.tokenizer
        inputs = tok.apply_chat_template(list(messages), add_generation_prompt=True, return_dict=True,
                                         return_tensors="pt").to(self.model.device)
        while not self._lock.acquire(timeout=0.1):  # one generation at a time: they share the CPU cores
            if cancel is not None and cancel.is_set():
                return ""
        try:
            with torch.inference_mode():
                out = self.model.generate(**inputs, **self.decoding(temperature, max_new_tokens),
                                          stopping_criteria=_stop_on(cancel))
        finally:
            self._lock.release()
        return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def decoding(self, temperature: float, max_new_tokens: int) -> dict:
        """``generate`` arguments on top of the model's own generation config (end-of-turn tokens, repetition
        penalty, top-k/top-p): greedy at temperature 0, else sampling at ``temperature``."""
        own = self.model.generation_config
        kwargs = {"max_new_tokens": int(max_new_tokens), "do_sample": temperature > 0}
        if temperature > 0:
            kwargs.update(temperature=float(temperature), top_p=own.top_p or TOP_P)
        if own.pad_token_id is None:
            tok = self.tokenizer
            kwargs["pad_token_id"] = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return kwargs


def _stop_on(cancel: Optional[threading.Event]):
    """Stopping criteria that end generation once ``cancel`` is set (checked after every token)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            stop = cancel is not None and cancel.is_set()
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Cancelled()])


_LOADED: dict[tuple, LocalChat] = {}
_LOAD_LOCK = threading.Lock()


class SlotChat:
    """A local model that answers in a GPU slot (ZeroGPU, :mod:`dferclip.zero_gpu`): this process never loads
    it; each reply crosses as its messages and text, and the GPU worker loads the model and keeps it while it
    lives. A cancel cannot reach the worker: the reply's token budget bounds it."""

    def __init__(self, spec: LocalModelSpec, device):
        self.spec, self.device = spec, str(device)

    def describe(self) -> str:
        return self.spec.describe()

    def reply(self, messages: Sequence[dict], *, temperature: float = 0.0, max_new_tokens: int = 200,
              cancel: Optional[threading.Event] = None) -> str:
        if cancel is not None and cancel.is_set():
            return ""
        return _reply_in_slot(self.spec.name, self.device, [dict(m) for m in messages], float(temperature),
                              int(max_new_tokens))


@zero_gpu.gpu(duration=lambda name, device, messages, temperature, max_new_tokens: 20 + 0.1 * max_new_tokens)
def _reply_in_slot(name: str, device: str, messages: list, temperature: float, max_new_tokens: int) -> str:
    return local_chat(name, device).reply(messages, temperature=temperature, max_new_tokens=max_new_tokens)


def local_chat(name: Optional[str] = None, device=None) -> LocalChat | SlotChat:
    """The loaded model for registry entry ``name`` (default entry when None); one model stays loaded. Under a
    GPU boundary, outside a slot: a :class:`SlotChat` that runs each reply in one."""
    from .. import runtime

    spec = get_local_model(name)
    dev = runtime.device() if device is None else device
    if zero_gpu.mode() is not None and not zero_gpu.inside():
        return SlotChat(spec, dev)
    key = (spec, str(dev), _hub_cache_dir())
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED.clear()  # about 2 GB in fp32: keep one
            _LOADED[key] = LocalChat.load(spec, dev)
        return _LOADED[key]
