"""Loading is safe and every bad source gives a clear error naming the problem."""
import json
import os
import time

import pytest
import torch

import dferclip
from dferclip.errors import CheckpointError, DescriptionError, WeightsUnavailableError
from dferclip.weights.checkpoints import (
    infer_official_config,
    official_to_own,
    read_official,
)

MANIFEST = "dferclip_official_vitb32_dfew_state_dict_manifest.json"


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "recorder": _Exploit(marker)}, bad)
    with pytest.raises(CheckpointError, match="allow-list"):
        dferclip.load_model(bad)
    assert not marker.exists()


def test_truncated_checkpoint(conformance_path, tmp_path):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(conformance_path.read_bytes()[: 5_000_000])
    with pytest.raises(CheckpointError, match="truncated|not a PyTorch checkpoint"):
        dferclip.load_model(cut)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        dferclip.load_model(text)
    other = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(8, 3, 7, 7)}}, other)
    with pytest.raises(CheckpointError, match="not a DFER-CLIP checkpoint: missing tensor"):
        dferclip.load_model(other)
    with pytest.raises(CheckpointError, match="cannot find weights"):
        dferclip.load_model("no such thing here")


def test_wrong_class_counts(conformance_path, tmp_path):
    with pytest.raises(CheckpointError, match="11 classes, the model has 7"):
        dferclip.load_model(conformance_path, descriptions="dferclip-official-mafw")
    ck = read_official(conformance_path)
    sd = ck["state_dict"]
    for k in ("module.prompt_learner.ctx", "module.prompt_learner.token_prefix", "module.prompt_learner.token_suffix"):
        sd[k] = sd[k][:5]
    five = tmp_path / "five.pth"
    torch.save({"state_dict": sd}, five)
    with pytest.raises(CheckpointError, match="no built-in class set has 5 classes"):
        dferclip.load_model(five)


def test_own_format_errors(conformance_path, tmp_path):
    out = dferclip.convert(conformance_path, tmp_path / "m")
    (out / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        dferclip.load_model(out)
    (out / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a dferclip model config"):
        dferclip.load_model(out)


def test_real_size_official_layout_maps_onto_the_model(conformance_path):
    """All 618 keys of a real ViT-B/32 official state_dict (from the manifest) map to this model's keys."""
    manifest = json.loads((conformance_path.parent / MANIFEST).read_text())
    sd = {}
    for entry in manifest["keys"]:
        same = entry["same_tensor_as"]
        sd[entry["key"]] = sd[same] if same else torch.empty(entry["shape"], device="meta")
    config = infer_official_config({k[len("module."):]: v for k, v in sd.items()})
    assert config.clip["vision_cfg"] == {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}
    assert config.clip["text_cfg"]["layers"] == 12 and config.clip["text_cfg"]["width"] == 512
    assert (config.temporal.layers, config.temporal.heads, config.temporal.mlp_dim) == (1, 8, 1024)
    with torch.device("meta"):
        model = dferclip.build_model("dferclip-vit-b-32")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = {k: tuple(v.shape) for k, v in official_to_own(sd).items()}
    assert mapped == ours


def test_offline_defaults_say_they_are_untrained(caplog):
    with caplog.at_level("WARNING"):
        model = dferclip.load_model("random:dferclip-tiny")
    assert model.weights_info["trained"] is False
    assert "meaningless" in model.weights_info["warning"]
    assert "meaningless" in caplog.text


def test_hub_and_pretrained_fail_fast_offline():
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="not in the local Hugging Face cache"):
        dferclip.load_model("someone/dfer-clip-dfew")
    with pytest.raises(WeightsUnavailableError, match="cannot be reached"):
        dferclip.load_model("pretrained:dferclip-vit-b-32")
    assert time.perf_counter() - t0 < 15


def test_hub_repo_resolves_from_local_cache_offline(conformance_path, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    snap = tmp_path / "models--someone--dfer-clip-dfew" / "snapshots" / ("0" * 40)
    dferclip.convert(conformance_path, snap)
    (tmp_path / "models--someone--dfer-clip-dfew" / "refs").mkdir()
    (tmp_path / "models--someone--dfer-clip-dfew" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    model = dferclip.load_model("someone/dfer-clip-dfew")
    assert model.weights_info["source"] == "hf://someone/dfer-clip-dfew"
    assert model.num_classes == 7


def test_descriptions_must_match_what_the_checkpoint_was_trained_with(conformance_path, tmp_path):
    ck = read_official(conformance_path)
    sd = ck["state_dict"]
    sd["module.prompt_learner.token_suffix"] = sd["module.prompt_learner.token_suffix"] + 1.0
    other = tmp_path / "other_texts.pth"
    torch.save({"state_dict": sd}, other)
    with pytest.raises(DescriptionError, match="other class descriptions"):
        dferclip.load_model(other)
    texts = [f"description number {i}" for i in range(7)]
    model = dferclip.load_model(other, descriptions=texts)  # the user says which texts
    assert model.descriptions.first_descriptions() == texts
