"""The two on-disk formats of model weights, read and written safely.

- An official DFER-CLIP checkpoint (``.pth``/``.pt``: ``{'state_dict': ..., 'recorder': RecorderMeter, ...}``,
  ``module.`` prefix, CUDA tensors), read with PyTorch's weights-only unpickler and a fixed allow-list.
- An official EmoCLIP state dict, read the same way: ``VClip``'s (``backbone.*`` the whole CLIP, ``temporal.*``,
  ``logit_scale``) or ``DownstreamTask``'s without its ``mlp`` (``backbone.*`` the image tower only,
  ``temporal.*``), either with or without DDP's ``module.``; a file without text tower is completed from OpenAI
  CLIP ViT-B/32 and ``weights_info`` says so (:func:`load_emoclip`).
- The project's own format: a folder with ``model.safetensors`` and ``config.json`` (architecture, class
  descriptions, provenance), written in one rename.

Which source string means which file is :mod:`dferclip.weights.checkpoints`' business; fetching published
weights (:mod:`dferclip.weights.fetch`) reads and writes through this module too.
"""
from __future__ import annotations

import dataclasses
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
from ..models import build_model, model_family
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
                f"{path.name} refers to Python objects outside the allow-list of official DFER-CLIP and EmoCLIP "
                f"checkpoints; refusing to unpickle it ({msg})"
            ) from None
        raise CheckpointError(f"cannot read {path.name}: {msg} (truncated or corrupt file?)") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    raise CheckpointError(f"{path.name} holds no DFER-CLIP or EmoCLIP state_dict")


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


# the temporal transformer both official codes share (Residual(PreNorm(Attention)), Residual(PreNorm(FeedForward)))
_TEMPORAL_NAMES = {("0", "norm.weight"): "norm1.weight", ("0", "norm.bias"): "norm1.bias",
                   ("0", "fn.to_qkv.weight"): "attn.qkv.weight", ("0", "fn.to_out.0.weight"): "attn.proj.weight",
                   ("0", "fn.to_out.0.bias"): "attn.proj.bias", ("1", "norm.weight"): "norm2.weight",
                   ("1", "norm.bias"): "norm2.bias", ("1", "fn.net.0.weight"): "fc1.weight",
                   ("1", "fn.net.0.bias"): "fc1.bias", ("1", "fn.net.3.weight"): "fc2.weight",
                   ("1", "fn.net.3.bias"): "fc2.bias"}


def _temporal_layer_key(k: str, prefix: str) -> str:
    """An official temporal-layer tensor name (``<prefix><i>.<0|1>.fn.<rest>``) -> ours."""
    m = re.fullmatch(r"(\d+)\.(\d)\.fn\.(.*)", k[len(prefix):])
    name = _TEMPORAL_NAMES.get((m[2], m[3])) if m else None
    if name is None:
        raise CheckpointError(f"unexpected temporal-model tensor {k}")
    return f"temporal.layers.{m[1]}.{name}"


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
            out[_temporal_layer_key(k, "temporal_net.temporal_transformer.layers.")] = v
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
    """An official checkpoint: DFER-CLIP's, or any layout the EmoCLIP code writes (:func:`load_emoclip`)."""
    ck = read_official(path)
    sd = _strip_prefix(ck["state_dict"])
    if is_emoclip(sd):
        return load_emoclip(sd, path, descriptions)
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


# --- official EmoCLIP checkpoints ----------------------------------------------------------------
EMOCLIP_TEMPORAL = "temporal.temporal_transformer.layers."
EMOCLIP_COMPLETION = ("ViT-B-32-quickgelu", "openai")  # what a file without text tower is completed from
EMOCLIP_LAYOUTS = ("VClip: backbone.* (the whole CLIP), temporal.*, logit_scale", "DownstreamTask without its mlp: "
                   "backbone.* (the CLIP image tower), temporal.*")


def is_emoclip(sd: dict) -> bool:
    """Whether a state dict (``module.`` stripped) is EmoCLIP's: its temporal model sits under ``temporal.``."""
    return any(k.startswith(EMOCLIP_TEMPORAL) for k in sd)


def emoclip_layout(sd: dict) -> str:
    """"vclip" (``VClip.state_dict()``) or "downstream" (``DownstreamTask``'s: image tower only); anything else
    is refused."""
    if "backbone.visual.conv1.weight" in sd and "logit_scale" in sd:
        layout = "vclip"
        allowed = ("backbone.", "temporal.", "logit_scale")
    elif "backbone.conv1.weight" in sd:
        layout = "downstream"
        allowed = ("backbone.", "temporal.", "mlp.")
    else:
        raise CheckpointError("not a layout the official EmoCLIP code writes; expected " + " or ".join(EMOCLIP_LAYOUTS))
    stray = [k for k in sd if not k.startswith(allowed)]
    if stray or not {"temporal.cls_token", "temporal.pos_embedding"} <= set(sd):
        what = f"unexpected tensors {stray[:5]}" if stray else "no temporal class token or position table"
        raise CheckpointError(f"not an official EmoCLIP {layout} layout: {what}; expected "
                              + " or ".join(EMOCLIP_LAYOUTS))
    return layout


def _emoclip_clip_arch(sd: dict, visual: str, text: Optional[str]) -> dict:
    """An open_clip architecture dict from the shapes (OpenAI CLIP: heads of 64, QuickGELU)."""
    conv = sd[visual + "conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = round((sd[visual + "positional_embedding"].shape[0] - 1) ** 0.5)
    arch = {"embed_dim": sd[visual + "proj"].shape[1], "quick_gelu": True,
            "vision_cfg": {"image_size": grid * patch, "layers": _count(sd, visual + "transformer.resblocks."),
                           "width": width, "head_width": 64, "patch_size": patch}}
    if text is not None:
        tw = sd[text + "ln_final.weight"].shape[0]
        arch["text_cfg"] = {"context_length": sd[text + "positional_embedding"].shape[0],
                            "vocab_size": sd[text + "token_embedding.weight"].shape[0], "width": tw,
                            "heads": tw // 64, "layers": _count(sd, text + "transformer.resblocks.")}
    return arch


def _same_arch(a: dict, b: dict) -> bool:
    """Same tower sizes (open_clip's default head width is 64, OpenAI's)."""
    def sizes(d: dict) -> tuple:
        return (d.get("embed_dim"), *({k: v for k, v in (d.get(c) or {}).items() if k != "head_width"}
                                     for c in ("vision_cfg", "text_cfg")))
    return sizes(a) == sizes(b)


def infer_emoclip_config(sd: dict, layout: str) -> ModelConfig:
    """Architecture from tensor shapes. Heads cannot be seen in them (only heads x dim_head): the official
    ``VClip`` always uses 8 (its ``nhead`` default, which no official script changes)."""
    from ..config import get_config
    from ..models.clip_towers import clip_config_dict

    try:
        if layout == "vclip":
            arch = _emoclip_clip_arch(sd, "backbone.visual.", "backbone.")
        else:
            arch = _emoclip_clip_arch(sd, "backbone.", None)
            arch["text_cfg"] = clip_config_dict(EMOCLIP_COMPLETION[0])["text_cfg"]
        official = clip_config_dict(EMOCLIP_COMPLETION[0])
        clip = EMOCLIP_COMPLETION[0] if _same_arch(arch, official) else arch
        inner = sd[EMOCLIP_TEMPORAL + "0.0.fn.fn.to_qkv.weight"].shape[0] // 3
        temporal = TemporalConfig(layers=_count(sd, EMOCLIP_TEMPORAL), heads=8, dim_head=inner // 8,
                                  mlp_dim=sd[EMOCLIP_TEMPORAL + "0.1.fn.fn.net.0.weight"].shape[0])
        positions = sd["temporal.pos_embedding"].shape[1]
    except (KeyError, IndexError) as e:
        raise CheckpointError(f"not an official EmoCLIP checkpoint: missing tensor {e}") from None
    if inner % 8:
        raise CheckpointError(f"EmoCLIP temporal attention of width {inner}: not 8 heads as the official model")
    base = get_config("emoclip-vit-b-32")
    size = arch["vision_cfg"]["image_size"]
    return base.replace(clip=clip, temporal=temporal, input=dataclasses.replace(base.input, image_size=size),
                        extra=dict(base.extra, positions=positions))


def emoclip_to_own(sd: dict, layout: str) -> dict:
    """Official EmoCLIP names -> ours: the CLIP under ``clip.``, the temporal layers as ours, ``logit_scale`` ->
    ``log_logit_scale``; a DownstreamTask's ``mlp`` (its supervised classifier head) is left out."""
    out = {}
    for k, v in sd.items():
        if k.startswith(EMOCLIP_TEMPORAL):
            out[_temporal_layer_key(k, EMOCLIP_TEMPORAL)] = v
        elif k in ("temporal.cls_token", "temporal.pos_embedding"):
            out[k] = v
        elif k == "logit_scale":
            out["log_logit_scale"] = v.reshape(())
        elif k.startswith("backbone."):
            out[("clip." if layout == "vclip" else "clip.visual.") + k[len("backbone."):]] = v
        elif not k.startswith("mlp."):
            raise CheckpointError(f"unexpected EmoCLIP tensor {k}")
    return out


def _emoclip_completion(config: ModelConfig) -> nn.Module:
    """OpenAI CLIP ViT-B/32 (open_clip), whose text tower and logit scale complete a file that lacks them."""
    from .hub import pretrained_clip

    return pretrained_clip(EMOCLIP_COMPLETION[0], EMOCLIP_COMPLETION[1])


def load_emoclip(sd: dict, path: str | Path, descriptions=None) -> nn.Module:
    """An EmoCLIP model from an official state dict (``module.`` stripped), in either layout the official code
    writes (:func:`emoclip_layout`). A DownstreamTask file has no text tower and no logit scale: they come from
    OpenAI CLIP ViT-B/32, which needs its weights here (downloaded, or in the Hugging Face cache), and
    ``weights_info`` says so. Descriptions default to EmoCLIP's official MAFW sentences (the set it was trained
    beside)."""
    from ..models.emoclip import EmoCLIP
    from ..text.descriptions import load_description_set

    name = Path(path).name
    layout = emoclip_layout(sd)
    config = infer_emoclip_config(sd, layout)
    try:
        ds = free_descriptions(descriptions, load_description_set(f"{EmoCLIP.official_descriptions}-mafw"))
    except DescriptionError as e:
        raise CheckpointError(f"{name}: {e}") from None
    info = {"kind": "official-emoclip", "trained": True, "source": str(path),
            "layout": "VClip" if layout == "vclip" else "DownstreamTask"}
    if layout == "vclip":
        model = build_model(config, ds)
    else:
        if config.clip != EMOCLIP_COMPLETION[0]:
            raise CheckpointError(f"{name}: an EmoCLIP DownstreamTask file whose image tower is not ViT-B/32 cannot "
                                  "be completed with OpenAI CLIP ViT-B/32's text tower")
        try:
            completion = _emoclip_completion(config)
        except CheckpointError as e:
            raise type(e)(f"{name} holds EmoCLIP's image tower and temporal model only (DownstreamTask layout); "
                          f"its text tower and logit scale must come from OpenAI CLIP ViT-B/32: {e}") from None
        model = build_model(config, ds)
        model.clip.load_state_dict(completion.state_dict())
        with torch.no_grad():
            model.log_logit_scale.copy_(completion.logit_scale.detach().reshape(()))
        info["completed_from"] = "OpenAI CLIP ViT-B/32 (open_clip 'openai'): text tower and logit scale"
        info["warning"] = ("the file holds EmoCLIP's image tower and temporal model only; its text tower and logit "
                           "scale are OpenAI CLIP ViT-B/32's")
    own = emoclip_to_own(sd, layout)
    try:
        missing, unexpected = model.load_state_dict(own, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{name}: tensors of unexpected shapes: {str(e).splitlines()[-1].strip()}") from None
    if layout == "downstream":  # the text tower and logit scale were set above
        missing = [k for k in missing if k.startswith(("clip.visual.", "temporal."))]
    if missing or unexpected:
        raise CheckpointError(f"{name}: tensors missing {missing[:5]} / unexpected {unexpected[:5]}")
    if "mlp.0.weight" in sd:
        info["ignored"] = "the DownstreamTask's mlp classifier head (not used for zero-shot)"
    model.weights_info = info
    return model


def free_descriptions(descriptions, default: DescriptionSet) -> DescriptionSet:
    """The set a model with nothing learned per class (EmoCLIP) uses: any set, of any number of classes; a bare
    list of texts takes ``default``'s classes."""
    from ..text.descriptions import load_description_set

    if descriptions is None:
        return default
    if isinstance(descriptions, DescriptionSet):
        return descriptions
    if isinstance(descriptions, (str, Path)):
        return load_description_set(descriptions)
    items = list(descriptions)
    if len(items) != default.num_classes:
        raise DescriptionError(f"{len(items)} descriptions given for the {default.num_classes} classes of "
                               f"{default.name!r}")
    return default.with_descriptions(items)


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
    try:
        free = not getattr(model_family(config.family), "has_learned_prompts", True)
    except ValueError as e:
        raise CheckpointError(f"{cfg_path} describes no model this version can build ({_reason(e)})") from None
    ds = (free_descriptions(descriptions, saved) if free else
          saved if descriptions is None else as_description_set(descriptions, saved.num_classes))
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
