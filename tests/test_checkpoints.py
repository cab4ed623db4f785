"""Loading is safe and every bad source gives a clear error naming the problem."""
import json
import os
import time

import pytest
import torch

import dferclip
from dferclip.errors import CheckpointError, DescriptionError, WeightsUnavailableError
from dferclip.weights.formats import (
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


def test_save_model_writes_a_whole_folder_or_nothing(tiny_model, tmp_path):
    out = dferclip.save_model(tiny_model, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(CheckpointError, match="already exists"):
        dferclip.save_model(tiny_model, out)
    with pytest.raises(TypeError):  # the config cannot be written: the weights written before it must not land
        dferclip.save_model(tiny_model, out, meta={"note": object()}, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left behind
    dferclip.save_model(tiny_model, out, meta={"note": "again"}, overwrite=True)
    assert dferclip.load_model(out).weights_info["note"] == "again"


def test_convert_refuses_to_overwrite_without_force(conformance_path, tmp_path, capsys):
    from dferclip.cli import main

    out = tmp_path / "conv"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["convert", str(conformance_path), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
    assert main(["convert", str(conformance_path), str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.pop("model"), "malformed .*missing 'model'"),
    (lambda c: c.pop("descriptions"), "malformed .*missing 'descriptions'"),
    (lambda c: c["model"].update(temporal=[1, 2]), "malformed"),
    (lambda c: c["model"].update(colour="blue"), "malformed .*unknown model config keys"),
    (lambda c: c.update(descriptions={"format": "x"}), "malformed .*not a description set"),
    (lambda c: c.update(weights=[1]), "malformed .*weights"),
    (lambda c: c["model"]["temporal"].update(layers="two"), "no model this version can build"),
])
def test_malformed_own_config_is_a_clear_checkpoint_error(tiny_model, tmp_path, capsys, edit, message):
    from dferclip.cli import main

    out = dferclip.save_model(tiny_model, tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    edit(config)
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        dferclip.load_model(out)
    (out / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a dferclip model config"):
        dferclip.load_model(out)
    assert main(["predict", str(tmp_path / "no-video.mp4"), "--checkpoint", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_hub_reachability_is_probed_again_after_its_ttl(monkeypatch):
    import socket

    from dferclip.weights import hub

    with socket.socket() as s:  # a free port, closed: the "Hub" is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hub, "REACHABLE_TTL_S", 0.5)
    assert hub.hub_reachable() is False
    with socket.socket() as server:  # the Hub comes back
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        assert hub.hub_reachable() is False  # within the TTL: the answer holds, no probe per download
        time.sleep(0.6)
        assert hub.hub_reachable() is True


def test_pretrained_clip_weights_in_the_cache_load_offline(tmp_path, monkeypatch):
    """Offline, open_clip weights already in the Hugging Face cache are used (only missing ones are an error)."""
    import huggingface_hub.constants as hc
    import open_clip
    from safetensors.torch import save_file

    from dferclip.models.clip_towers import build_clip

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_clip("ViT-B-32-quickgelu").state_dict().items()}
    weights = {k: torch.full(shape, 0.25, dtype=torch.float16) for k, shape in shapes.items()}
    repo = open_clip.get_pretrained_cfg("ViT-B-32-quickgelu", "openai")["hf_hub"].strip("/")
    root = tmp_path / f"models--{repo.replace('/', '--')}"
    (root / "snapshots" / ("1" * 40)).mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("1" * 40)
    save_file(weights, str(root / "snapshots" / ("1" * 40) / "open_clip_model.safetensors"))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    model = dferclip.load_model("pretrained:dferclip-vit-b-32")
    assert model.weights_info["kind"] == "pretrained-clip"
    assert torch.all(model.clip.visual.conv1.weight == 0.25) and torch.all(model.clip.token_embedding.weight == 0.25)
