"""The two on-disk formats of model weights, read and written safely.

- An official DFER-CLIP checkpoint (``.pth``/``.pt``: ``{'state_dict': ..., 'recorder': RecorderMeter, ...}``,
  ``module.`` prefix, CUDA tensors), read with PyTorch's weights-only unpickler and a fixed allow-list.
- The project's own format: a folder with ``model.safetensors`` and ``config.json`` (architecture, class
  descriptions, provenance), written in one rename.

Which source string means which file is :mod:`dferclip.weights.checkpoints`' business; fetching published
weights (:mod:`dferclip.weights.fetch`) reads and writes through this module too.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..config import InputConfig, ModelConfig, PromptConfig, TemporalConfig
from ..errors import CheckpointError, DescriptionError
from ..files import atomic_folder, write_json
from ..models import build_model
from ..text.descriptions import DescriptionSet, as_description_set

OWN_FORMAT = "dferclip.model/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

# --- official checkpoints --------------------------------------------------------------------
class RecorderMeter:
    """Stand-in for the official training script's ``__main__.RecorderMeter`` (data only)."""


RecorderMeter.__module__ = "__main__"


def _official_allowlist() -> list:
    from numpy._core import multiarray

    allowed = [RecorderMeter, multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.Float32DType,
               (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]  # numpy 1.x pickles
    allowed += [getattr(np.dtypes, n) for n in ("Float64DType", "Int64DType", "Int32DType")]
    return allowed


def read_official(path: str | Path) -> dict:
    """The dict an official training script saved, unpickled without running any code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint (not a zip archive; truncated or foreign)")
    try:
        with torch.serialization.safe_globals(_official_allowlist()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler reports unsafe globals, bad zips and truncation this way
        msg = str(e).split("\n")[0]
        if "Unsupported global" in str(e) or "weights_only" in str(e):
            raise CheckpointError(
                f"{path.name} refers to Python objects outside the allow-list of official DFER-CLIP "
                f"checkpoints; refusing to unpickle it ({msg})"
            ) from None
        raise CheckpointError(f"cannot read {path.name}: {msg} (truncated or corrupt file?)") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    raise CheckpointError(f"{path.name} holds no DFER-CLIP state_dict")


def _strip_prefix(sd: dict) -> dict:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def _count(sd: dict, prefix: str) -> int:
    idx = {int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def infer_official_config(sd: dict) -> ModelConfig:
    """Architecture from tensor shapes, as the official model builder infers it."""
    try:
        conv = sd["clip_model_.visual.conv1.weight"]
        vwidth, patch = conv.shape[0], conv.shape[-1]
        grid = round((sd["clip_model_.visual.positional_embedding"].shape[0] - 1) ** 0.5)
        clip = {
            "embed_dim": sd["clip_model_.text_projection"].shape[1],
            "quick_gelu": True,
            "vision_cfg": {"image_size": grid * patch, "layers": _count(sd, "clip_model_.visual.transformer.resblocks."),
                           "width": vwidth, "patch_size": patch},
            "text_cfg": {"context_length": sd["clip_model_.positional_embedding"].shape[0],
                         "vocab_size": sd["clip_model_.token_embedding.weight"].shape[0],
                         "width": sd["clip_model_.ln_final.weight"].shape[0],
                         "heads": sd["clip_model_.ln_final.weight"].shape[0] // 64,
                         "layers": _count(sd, "clip_model_.transformer.resblocks.")},
        }
        t = "temporal_net.temporal_transformer.layers."
        inner = sd[t + "0.0.fn.fn.to_qkv.weight"].shape[0] // 3
        temporal = TemporalConfig(layers=_count(sd, t), heads=inner // 64, dim_head=64,
                                  mlp_dim=sd[t + "0.1.fn.fn.net.0.weight"].shape[0])
        ctx = sd["prompt_learner.ctx"]
        num_frames = sd["temporal_net.pos_embedding"].shape[1] - 1
    except KeyError as e:
        raise CheckpointError(f"not a DFER-CLIP checkpoint: missing tensor {e}") from None
    prompt = PromptConfig(n_ctx=ctx.shape[-2], class_specific=ctx.dim() == 3)
    return ModelConfig(clip=clip, temporal=temporal, prompt=prompt,
                       input=InputConfig(num_frames=num_frames, image_size=grid * patch))


def official_to_own(sd: dict) -> dict:
    """Official key names -> this project's (the duplicated CLIP under ``clip_model_`` is the source)."""
    sd = _strip_prefix(sd)
    out = {}
    for k, v in sd.items():
        if k.startswith("clip_model_."):
            out["clip." + k[len("clip_model_."):]] = v
        elif k in ("temporal_net.cls_token", "temporal_net.pos_embedding"):
            out["temporal." + k.split(".")[-1]] = v
        elif k.startswith("temporal_net.temporal_transformer.layers."):
            i, sub, rest = re.match(r"temporal_net\.temporal_transformer\.layers\.(\d+)\.(\d)\.fn\.(.*)", k).groups()
            name = {("0", "norm.weight"): "norm1.weight", ("0", "norm.bias"): "norm1.bias",
                    ("0", "fn.to_qkv.weight"): "attn.qkv.weight", ("0", "fn.to_out.0.weight"): "attn.proj.weight",
                    ("0", "fn.to_out.0.bias"): "attn.proj.bias", ("1", "norm.weight"): "norm2.weight",
                    ("1", "norm.bias"): "norm2.bias", ("1", "fn.net.0.weight"): "fc1.weight",
                    ("1", "fn.net.0.bias"): "fc1.bias", ("1", "fn.net.3.weight"): "fc2.weight",
                    ("1", "fn.net.3.bias"): "fc2.bias"}.get((sub, rest))
            if name is None:
                raise CheckpointError(f"unexpected temporal-model tensor {k}")
            out[f"temporal.layers.{i}.{name}"] = v
        elif k == "prompt_learner.ctx":
            out["prompt.ctx"] = v
    # image_encoder.* / text_encoder.* alias clip_model_.*; a checkpoint where they differ is not official
    for alias, target in (("image_encoder.", "clip.visual."), ("text_encoder.", "clip.")):
        for k, v in sd.items():
            if k.startswith(alias):
                t = out.get(target + k[len(alias):])
                if t is None or (t is not v and not torch.equal(t, v)):
                    raise CheckpointError(f"{k} does not match its alias in clip_model_: not an official layout")
    return out


def _check_prompt_buffers(model, sd: dict) -> None:
    """The saved SOS/description token embeddings must be those of the descriptions we use."""
    prefix, suffix = sd.get("prompt_learner.token_prefix"), sd.get("prompt_learner.token_suffix")
    if prefix is None or suffix is None:
        return
    with torch.no_grad():
        tokens = model.tokenize_prompts(model.descriptions.first_descriptions())
        emb = model.clip.token_embedding(tokens)
    n = model.config.prompt.n_ctx
    if emb.shape[0] != prefix.shape[0] or not (
        torch.allclose(emb[:, :1], prefix) and torch.allclose(emb[:, 1 + n:], suffix)
    ):
        raise DescriptionError(
            "the checkpoint was trained with other class descriptions than the official ones; "
            "pass descriptions= with the texts it was trained on"
        )


def load_official(path: str | Path, descriptions=None) -> nn.Module:
    ck = read_official(path)
    sd = _strip_prefix(ck["state_dict"])
    config = infer_official_config(sd)
    n_cls = sd["prompt_learner.ctx"].shape[0] if config.prompt.class_specific else None
    if n_cls is None:
        n_cls = sd["prompt_learner.token_prefix"].shape[0]
    try:
        ds = as_description_set(descriptions, n_cls)
    except DescriptionError as e:
        raise CheckpointError(f"{Path(path).name}: {e}") from None
    model = build_model(config, ds)
    missing, unexpected = model.load_state_dict(official_to_own(sd), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{Path(path).name}: tensors missing {missing[:5]} / unexpected {unexpected[:5]}")
    if descriptions is None:
        _check_prompt_buffers(model, sd)
    model.weights_info = {"kind": "official", "trained": True, "source": str(path),
                          "epoch": ck.get("epoch"), "best_acc": _scalar(ck.get("best_acc"))}
    return model


def _scalar(v):
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v.item())
    return v if isinstance(v, (int, float)) else None


# --- the project's own format ----------------------------------------------------------------
def save_model(model: nn.Module, out_dir: str | Path, meta: Optional[dict] = None, *, overwrite: bool = False) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (architecture, descriptions, provenance) as one folder: both
    files go into a temporary folder that is renamed into place, so ``out_dir`` never holds half a model. A
    non-empty ``out_dir`` raises CheckpointError unless ``overwrite`` (then it is replaced as a whole)."""

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    info = {
        "format": OWN_FORMAT,
        "model": model.config.to_dict(),
        "descriptions": model.descriptions.to_dict(),
        "weights": {k: v for k, v in model.weights_info.items() if k != "source"} | (meta or {}),
    }
    try:
        with atomic_folder(out_dir, overwrite=overwrite) as tmp:
            _save_tensors(state, tmp / WEIGHTS_FILE)
            write_json(tmp / CONFIG_FILE, info)
    except FileExistsError:
        raise CheckpointError(f"{out_dir} already exists and is not empty: choose another folder, or replace it "
                              "explicitly (overwrite=True; --force on the command line)") from None
    return Path(out_dir)


def _save_tensors(state: dict, path: Path) -> None:
    """``safetensors.save_file``, whose I/O errors (a full disk) are raised as the OSError they are."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(state, str(path), metadata={"format": OWN_FORMAT})
    except SafetensorError as e:
        code = re.search(r"os error (\d+)", str(e))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from None


def load_own(path: str | Path, descriptions=None) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    folder = p if p.is_dir() else p.parent
    weights = p if p.is_file() else folder / WEIGHTS_FILE
    cfg_path = folder / CONFIG_FILE
    if not weights.is_file() or not cfg_path.is_file():
        raise CheckpointError(f"{folder} needs both {WEIGHTS_FILE} and {CONFIG_FILE}")
    try:
        info = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from None
    fmt = info.get("format") if isinstance(info, dict) else None
    if fmt != OWN_FORMAT:
        raise CheckpointError(f"{cfg_path} is not a dferclip model config (format {fmt!r})")
    try:
        config = ModelConfig.from_dict(info["model"])
        saved = DescriptionSet.from_dict(info["descriptions"])
        if not isinstance(info.get("weights") or {}, dict):
            raise TypeError("weights is not a mapping")
    except (KeyError, TypeError, ValueError, AttributeError, DescriptionError) as e:
        raise CheckpointError(f"{cfg_path} is malformed ({_reason(e)})") from None
    ds = saved if descriptions is None else as_description_set(descriptions, saved.num_classes)
    try:
        model = build_model(config, ds)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{cfg_path} describes no model this version can build ({_reason(e)})") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {weights.name}: {e} (truncated or corrupt?)") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights.name} does not fit its config: {str(e).splitlines()[0]} ...") from None
    model.weights_info = dict(info.get("weights") or {}) | {"source": str(folder)}
    model.weights_info.setdefault("kind", model.family)
    model.weights_info.setdefault("trained", True)
    return model


def _reason(e: Exception) -> str:
    """An exception as a short phrase ("missing 'model'", "unknown model config keys: [...]")."""
    if isinstance(e, KeyError):
        return f"missing {e}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def convert(official_path: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Official ``.pth`` -> the project's format (weights only, no pickle). A non-empty ``out_dir`` raises
    CheckpointError unless ``overwrite``."""
    model = load_official(official_path)
    return save_model(model, out_dir, meta={"converted_from": Path(official_path).name}, overwrite=overwrite)
