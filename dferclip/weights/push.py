"""Publishing a converted entry to a Hugging Face Hub model repo: the project's format plus a model card, so a
Space can load it with ``DFERCLIP_HUB_REPO=org/name`` (or a registry entry ``{"hub": "org/name"}``) instead of
downloading from Google Drive."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..errors import WeightsUnavailableError
from ..files import write_json
from ..urls import redact_url
from .formats import CONFIG_FILE, WEIGHTS_FILE
from .fetch import _arch_facts, ensure_cached
from .published import PublishedWeights


def model_card(entry: PublishedWeights, info: dict, repo_id: str) -> str:
    """README.md for the Hub repo: YAML front matter, architecture, classes, figures, source, licences."""
    from ..config import ModelConfig

    config = ModelConfig.from_dict(info["model"])
    classes = [c["name"] for c in info["descriptions"]["classes"]]
    arch = _arch_facts(config)
    p, lic, file = entry.paper or {}, entry.licence or {}, (info.get("weights") or {}).get("file") or {}
    figures = (f"| {p.get('scope', '')} | {p['uar']:.2f} | {p['war']:.2f} |" if p.get("uar") is not None
               else "| (none published) | | |")
    lines = [
        "---", "license: mit", "library_name: dferclip", "pipeline_tag: video-classification",
        "tags: [facial-expression-recognition, dynamic-facial-expression-recognition, clip, dfer-clip, dferclip]",
        "---", "", f"# {entry.title}", "",
        (f"The published {entry.title} weights, converted by the dferclip library to safetensors + `config.json` "
         "(no pickle). The official checkpoint was read with PyTorch's weights-only unpickler and checked against "
         "the architecture below before conversion."), "",
        "```python", "import dferclip", f'model = dferclip.load_model("{repo_id}")   # logits: model(video)',
        "```", "",
        "## Architecture", "",
        f"{entry.family} on CLIP (`{entry.config}`): " + ", ".join(f"{k} {v}" for k, v in arch.items()) + ".",
        f"Input: {config.input.num_frames} frames, {config.input.image_size} px, sampler `{config.input.sampler}`, "
        + ("no mean/std normalisation (RGB / 255)." if config.input.mean is None else "CLIP normalisation."), "",
        f"## Classes ({len(classes)}, {entry.class_set} order)", "",
        ", ".join(f"{i} {c}" for i, c in enumerate(classes)), "",
        "## Results reported in the paper", "", "| scope | UAR | WAR |", "| --- | --- | --- |", figures, "",
        "## Source", "", f"- weights: {entry.source} ({entry.host_text})",
    ]
    if file.get("sha256"):
        lines.append(f"- original file: {file.get('size')} bytes, sha256 `{file['sha256']}`")
    if p.get("citation"):
        lines.append(f"- paper: {p['citation']}")
    lines += ["", "## Licence", "", f"- weights: {lic.get('weights', 'unknown')}",
              f"- training data: {lic.get('dataset', 'unknown')}", ""]
    return "\n".join(lines)


def build_folder(entry: PublishedWeights, out_dir: str | Path, repo_id: str) -> Path:
    """The repo's files (``model.safetensors``, ``config.json``, ``README.md``) in ``out_dir``; fetches first."""
    folder = ensure_cached(entry)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / WEIGHTS_FILE, out / WEIGHTS_FILE)
    info = json.loads((folder / CONFIG_FILE).read_text())
    file = (info.get("weights") or {}).get("file")
    if isinstance(file, dict) and file.get("url"):  # a cache converted by an older version may hold credentials
        file["url"] = redact_url(file["url"])
    write_json(out / CONFIG_FILE, info)
    (out / "README.md").write_text(model_card(entry, info, repo_id))
    return out


def push(entry: PublishedWeights, repo_id: str, private: bool = False) -> str:
    """Upload the converted entry to the Hub model repo ``repo_id`` (created if needed); returns its URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from .hub import hub_reachable

    if not hub_reachable():
        raise WeightsUnavailableError("the Hugging Face Hub cannot be reached (offline, or HF_HUB_OFFLINE is set)")
    api = HfApi()
    with tempfile.TemporaryDirectory() as tmp:
        build_folder(entry, tmp, repo_id)
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            commit = api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="model",
                                       commit_message=f"dferclip: {entry.title} ({entry.name})")
        except HfHubHTTPError as e:
            raise WeightsUnavailableError(
                f"uploading to {repo_id} failed: {str(e).splitlines()[0]} (log in with `hf auth login` or set "
                "HF_TOKEN to a token with write access)") from None
    return getattr(commit, "repo_url", None) or f"https://huggingface.co/{repo_id}"
