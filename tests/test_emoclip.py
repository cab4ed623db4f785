"""EmoCLIP: conformance with the official code, every checkpoint layout it writes, its shipped descriptions,
compound classes, its input rules, its published entry and the CLI.

The conformance fixture (``fixtures/emoclip_official.pt``) was written by the unmodified official model code
(``fixtures/make_emoclip_fixture.py``): ``VClip(num_layers=2)`` with the published temporal transformer over a
small random CLIP, every weight set by a seeded recipe that :func:`official_state` replays here. The official
outputs are fp32 on the CPU; the official evaluation runs under CUDA fp16 autocast, a documented difference
(``dferclip/models/emoclip.py``), not tested here.
"""
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dferclip.errors import CheckpointError, WeightsUnavailableError
from dferclip.models import build_model
from dferclip.models.clip_towers import build_clip
from dferclip.models.emoclip import compound_descriptions
from dferclip.text.descriptions import DescriptionSet, load_class_sets, load_description_set
from dferclip.text.tokens import tokenize
from dferclip.video.decode import sample_indices
from dferclip.weights import fetch, formats, published
from dferclip.weights.checkpoints import convert, load_model

FIXTURE = Path(__file__).parent / "fixtures" / "emoclip_official.pt"
ATOL = 1e-5


def key_seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") % 2**63


@pytest.fixture(scope="module")
def fx():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def official_state(fx):
    """The official VClip state dict, replayed from the fixture's manifest and recipe."""
    r = fx["recipe"]
    sd = {}
    for k in sorted(fx["manifest"]):
        z = torch.randn(fx["manifest"][k], generator=torch.Generator().manual_seed(key_seed(k)))
        sd[k] = 1 + r["std"] * z if (z.dim() == 1 and k.endswith(".weight")) else r["std"] * z
    sd["logit_scale"] = torch.tensor(r["logit_scale"])
    sd["backbone.logit_scale"] = torch.tensor(r["backbone.logit_scale"])
    return sd


@pytest.fixture(scope="module")
def fixture_texts(fx):
    """The fixture's texts (the official 11 sentences and a long one) as a 12-class set."""
    return DescriptionSet(classes=[f"text{i}" for i in range(len(fx["texts"]))],
                          descriptions=[[t] for t in fx["texts"]])


@pytest.fixture(scope="module")
def vclip_file(official_state, tmp_path_factory):
    """The state dict saved as DDP training saves it (``module.`` prefix), as ``torch.save(model.state_dict())``."""
    path = tmp_path_factory.mktemp("official") / "vclip-ddp.pth"
    torch.save({"module." + k: v for k, v in official_state.items()}, path)
    return path


@pytest.fixture(scope="module")
def loaded(vclip_file, fixture_texts):
    return load_model(vclip_file, descriptions=fixture_texts)


def assert_matches_official(model, fx, scale_ratio=1.0):
    with torch.no_grad():
        video = model.encode_video(fx["video"])
        logits = model(fx["video"])
    official = fx["video_embeddings"]
    assert (official[0] - official[1]).abs().max() > 100 * ATOL  # the two clips differ: a wrong video path shows
    assert (video - official).abs().max() <= ATOL * max(1.0, float(official.abs().max()))
    assert logits.shape == fx["logits"].shape
    assert (logits - fx["logits"] * scale_ratio).abs().max() <= ATOL


# --- conformance ----------------------------------------------------------------------------------------
def test_tokens_and_text_embeddings_match_the_official_code(loaded, fx):
    assert torch.equal(tokenize(fx["texts"]), fx["tokens"])  # truncate=True: the long text ends in EOT at 77
    with torch.no_grad():
        ours = loaded.encode_texts(fx["texts"])
    assert (ours - F.normalize(fx["text_embeddings"], dim=-1)).abs().max() <= 1e-6


def test_vclip_layout_with_ddp_prefix_matches_official_logits(loaded, fx):
    info = loaded.weights_info
    assert loaded.family == "emoclip" and info["kind"] == "official-emoclip" and info["layout"] == "VClip"
    assert "warning" not in info  # the whole model came from the file
    t = loaded.config.temporal
    assert (t.layers, t.heads, t.dim_head, t.mlp_dim) == (2, 8, 2048, 512)
    assert loaded.temporal.pos_embedding.shape == (1, 1024, 512)
    assert loaded.logit_scale == pytest.approx(np.exp(4.0), rel=1e-6)  # the top-level scale, not CLIP's
    assert_matches_official(loaded, fx)


def test_vclip_layout_without_prefix_and_after_convert(official_state, fixture_texts, fx, tmp_path):
    path = tmp_path / "vclip.pth"
    torch.save(official_state, path)
    assert_matches_official(load_model(path, descriptions=fixture_texts), fx)
    out = convert(path, tmp_path / "converted")
    own = load_model(out, descriptions=fixture_texts)
    assert own.family == "emoclip" and own.weights_info["layout"] == "VClip"
    assert_matches_official(own, fx)
    assert load_model(out).descriptions.name == "emoclip-official-mafw"  # saved with the model


def downstream_state(official_state, fx, with_mlp=False) -> dict:
    """``DownstreamTask(VClip)``'s state dict: the image tower under ``backbone.``, ``temporal.*``; no mlp."""
    sd = {}
    for k in fx["downstream_keys"]:
        if k.startswith("backbone."):
            sd[k] = official_state["backbone.visual." + k[len("backbone."):]]
        elif k.startswith("temporal."):
            sd[k] = official_state[k]
        elif with_mlp:
            sd[k] = torch.zeros(3)
    assert with_mlp or not any(k.startswith("mlp.") for k in sd)
    return sd


@pytest.fixture
def completion(official_state, fx, monkeypatch):
    """OpenAI CLIP ViT-B/32 stood in for by the fixture's own CLIP (text tower and its logit scale 2.0)."""
    arch = formats.infer_emoclip_config({k: v for k, v in official_state.items()}, "vclip").clip
    clip = build_clip(arch)
    clip.load_state_dict({k[len("backbone."):]: v for k, v in official_state.items() if k.startswith("backbone.")})
    monkeypatch.setattr(formats, "EMOCLIP_COMPLETION", (arch, "fixture"))
    monkeypatch.setattr(formats, "_emoclip_completion", lambda config: clip)
    return clip


def test_downstream_layout_is_completed_with_clip_text_tower_and_says_so(official_state, fixture_texts, fx,
                                                                        completion, tmp_path):
    path = tmp_path / "downstream.pth"
    torch.save({"module." + k: v for k, v in downstream_state(official_state, fx).items()}, path)
    model = load_model(path, descriptions=fixture_texts)
    info = model.weights_info
    assert info["layout"] == "DownstreamTask" and "OpenAI CLIP ViT-B/32" in info["completed_from"]
    assert "text tower" in info["warning"]
    # the video side is the file's; the scale is the completion's (CLIP's 2.0, not VClip's 4.0)
    assert_matches_official(model, fx, scale_ratio=float(np.exp(2.0 - 4.0)))
    out = convert(path, tmp_path / "converted")
    again = load_model(out, descriptions=fixture_texts)
    assert again.weights_info["warning"] == info["warning"]  # still said after conversion
    assert_matches_official(again, fx, scale_ratio=float(np.exp(2.0 - 4.0)))


def test_downstream_layout_offline_says_what_is_missing(official_state, fx, completion, monkeypatch, tmp_path):
    def offline(config):
        raise WeightsUnavailableError("open_clip weights are not cached and the Hub cannot be reached")

    monkeypatch.setattr(formats, "_emoclip_completion", offline)
    path = tmp_path / "downstream.pth"
    torch.save(downstream_state(official_state, fx, with_mlp=True), path)
    with pytest.raises(WeightsUnavailableError, match="DownstreamTask layout.*OpenAI CLIP ViT-B/32.*cannot be reached"):
        load_model(path)


def test_real_size_downstream_file_is_the_published_architecture(fx):
    """A full-size DownstreamTask state dict (shapes only, on the meta device) infers OpenAI ViT-B/32 and the
    published temporal model: the emoclip-b32 entry's architecture."""
    with torch.device("meta"):
        clip = build_clip("ViT-B-32-quickgelu")
        model = build_model("emoclip-vit-b-32", num_classes=11)
    sd = {"backbone." + k: v for k, v in clip.visual.state_dict().items()}
    official_name = {ours: off for off, ours in formats._TEMPORAL_NAMES.items()}
    for k, v in model.temporal.state_dict().items():
        if k.startswith("layers."):
            _, i, rest = k.split(".", 2)
            sub, name = official_name[rest]
            k = f"temporal_transformer.layers.{i}.{sub}.fn.{name}"
        sd["temporal." + k] = v
    assert formats.emoclip_layout(sd) == "downstream"
    config = formats.infer_emoclip_config(sd, "downstream")
    assert config.clip == "ViT-B-32-quickgelu" and config.input == model.config.input
    fetch.check_fits(SimpleNamespace(config=config, num_classes=11), published.get_entry("emoclip-b32"))


def test_half_precision_file_as_written_on_gpu_loads_in_fp32(official_state, fixture_texts, fx, tmp_path):
    """On CUDA, ``clip.load`` converts CLIP's linear and conv weights to fp16, so VClip files hold fp16 tensors."""
    half = {k: v.half() if k.startswith("backbone.") and v.dim() > 1 else v for k, v in official_state.items()}
    path = tmp_path / "vclip-fp16.pth"
    torch.save(half, path)
    model = load_model(path, descriptions=fixture_texts)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.no_grad():
        assert (model(fx["video"]) - fx["logits"]).abs().max() <= 1e-2  # fp16-rounded weights, fp32 compute


def test_other_layouts_are_refused(official_state, fx, tmp_path):
    cases = {
        "no-backbone": {k: v for k, v in official_state.items() if k.startswith("temporal.")},
        "stray": dict(official_state, **{"head.weight": torch.zeros(2)}),
        "no-cls": {k: v for k, v in official_state.items() if k != "temporal.cls_token"},
    }
    messages = {"no-backbone": "not a layout the official EmoCLIP code writes", "stray": "unexpected tensors.*head",
                "no-cls": "no temporal class token"}
    for name, sd in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(sd, path)
        with pytest.raises(CheckpointError, match=messages[name]):
            load_model(path)
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": official_state, "config": SimpleNamespace(layers=2)}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):  # never runs code from a file
        load_model(path)


# --- descriptions ---------------------------------------------------------------------------------------
def test_official_sentence_sets_are_shipped_verbatim(fx):
    official = dict(zip(fx["class_names"], fx["texts"]))  # read from the official yml by the generator
    for name, class_set in (("emoclip-official-mafw", "MAFW"), ("emoclip-official-dfew", "DFEW")):
        ds = load_description_set(name)
        assert ds.class_set == class_set and ds.classes == load_class_sets()[class_set]
        assert ds.descriptions == [[official[c]] for c in ds.classes]
        p = ds.provenance
        assert p["licence"] == "Apache-2.0" and p["commit"] == fx["emoclip_commit"]
        assert p["source"] == "https://github.com/NickyFot/EmoCLIP"
    assert load_model("random:emoclip-tiny").descriptions.name == "emoclip-official-dfew"


def test_compound_classes_average_component_embeddings():
    model = build_model("emoclip-tiny", "emoclip-official-mafw").eval()
    base = model.descriptions
    compound = compound_descriptions(base, ["anger_disgust", "happiness_surprise", "sadness"])
    assert compound.descriptions[0] == base.descriptions[3] + base.descriptions[5]
    with torch.no_grad():
        single = model.encode_classes(base)
        mixed = model.encode_classes(compound)
    i = base.classes.index
    expected = F.normalize(torch.stack([single[i("anger")] + single[i("disgust")],
                                        single[i("happiness")] + single[i("surprise")], single[i("sadness")]]), dim=-1)
    assert (mixed - expected).abs().max() <= 1e-6
    assert (mixed[0] - single[i("anger")]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="joy not among the classes"):
        compound_descriptions(base, ["anger_joy"])


def test_zero_shot_only_and_zero_shot_is_emoclip_not_plain_clip():
    from dferclip.scoring import Scorer
    from dferclip.workbench import Workbench

    model = build_model("emoclip-tiny", num_classes=7).eval()
    assert model.has_learned_prompts is False and not hasattr(model, "encode_prompts")
    assert build_model("dferclip-tiny").has_learned_prompts is True
    video = torch.randn(2, 8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(video)
        zs_video = model.zero_shot_video(video)
        scores = Scorer(model).score(zs_video, model.descriptions, "zero-shot")
        plain = F.normalize(F.normalize(model.encode_frames(video), dim=-1).mean(1), dim=-1)
    assert (zs_video - F.normalize(model.encode_video(video), dim=-1)).abs().max() <= 1e-6
    assert (zs_video - plain).abs().max() > 1e-2  # not CLIP's frame average
    assert (scores.logits - logits).abs().max() <= 1e-4  # the workbench's zero-shot scores are the model's
    texts, _ = model.zero_shot_texts()
    assert texts == model.descriptions.first_descriptions()  # the bare sentences, as eval.py
    from dferclip.scoring import encode_clip

    emb = encode_clip(model, video[:1])
    assert torch.equal(emb.learned, emb.zero_shot) and (emb.zero_shot - zs_video[0]).abs().max() <= 1e-6
    wb = Workbench(model)
    assert wb.modes() == ["zero-shot"] and wb.reserved_tokens() == 0
    # any number of classes: nothing is learned per class
    assert load_model("random:emoclip-tiny", descriptions="emoclip-official-mafw").num_classes == 11


# --- input -----------------------------------------------------------------------------------------------
def test_window_sampler_follows_the_official_loader():
    assert sample_indices(100, 8, "window:4") == list(range(32, 64, 4))  # every 4th frame, a centred run
    assert sample_indices(20, 8, "window:4") == [0, 4, 8, 12, 16, 0, 4, 8]  # wrapped round once
    assert sample_indices(9, 8, "window:4") == [0, 4, 8, 0, 4, 8, 4, 0]  # then mirrored (np.pad "reflect")
    assert sample_indices(3, 5, "window:1") == [0, 1, 2, 0, 1]
    for bad in ("window", "window:0", "window:x", "middle:2", "random"):
        with pytest.raises(ValueError, match="unknown sampler"):
            sample_indices(10, 4, bad)
    from dferclip.config import CLIP_MEAN, CLIP_STD, get_config

    cfg = get_config("emoclip-vit-b-32").input
    assert (cfg.num_frames, cfg.sampler, cfg.resize, cfg.mean, cfg.std) == (32, "window:4", "bicubic", CLIP_MEAN,
                                                                           CLIP_STD)


def test_bicubic_crop_differs_from_bilinear():
    from dferclip.video.faces import crop_square

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    cubic = np.asarray(crop_square(image, (10, 10, 110, 110), 64, "bicubic"), dtype=int)
    linear = np.asarray(crop_square(image, (10, 10, 110, 110), 64), dtype=int)
    assert np.abs(cubic - linear).max() > 5
    with pytest.raises(ValueError, match="unknown resize"):
        crop_square(image, (10, 10, 110, 110), 64, "lanczos")


# --- published weights -------------------------------------------------------------------------------------
def test_published_entry():
    e = published.get_entry("emoclip-b32")
    assert e.family == "emoclip" and e.config == "emoclip-vit-b-32" and e.class_set == "MAFW"
    assert e.host == {"drive": "1cPgE0FlBCw5cvXq4-YEM6tUhE1-j8MS3"}
    assert (e.paper["uar"], e.paper["war"]) == (36.76, 46.27) and "Apache-2.0" in e.licence["code"]
    assert e.title == "EmoCLIP, MAFW"


def test_published_downstream_file_is_fetched_converted_and_keeps_its_warning(official_state, fx, completion,
                                                                              tmp_path, monkeypatch):
    from app_helpers import free_port
    from weights_server import WeightsServer

    arch = tmp_path / "fixture-arch.json"
    sd = downstream_state(official_state, fx)
    arch.write_text(json.dumps(formats.infer_emoclip_config(sd, "downstream").to_dict()))
    base = json.loads(published.REGISTRY_FILE.read_text())
    entry = dict(next(e for e in base["entries"] if e["name"] == "emoclip-b32"), config=str(arch))
    registry = tmp_path / "published.json"
    registry.write_text(json.dumps(dict(base, entries=[entry])))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("DFERCLIP_PUBLISHED", str(registry))
    monkeypatch.setenv("DFERCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "emoclip-b32.pth"
    torch.save(sd, path)
    with WeightsServer() as server:
        server.files["/emoclip-b32.pth"] = path.read_bytes()
        monkeypatch.setenv("DFERCLIP_WEIGHTS_MIRROR", server.url)
        model = load_model("emoclip-b32")
    info = model.weights_info
    assert info["published"] == "emoclip-b32" and info["family"] == "emoclip" and "text tower" in info["warning"]
    assert model.descriptions.name == "emoclip-official-mafw" and model.num_classes == 11
    assert published.is_cached(published.get_entry("emoclip-b32"))
    from dferclip.runtime import weights_banner

    text, warning = weights_banner(info)
    assert "EmoCLIP" in text and "36.76" in text and "OpenAI CLIP ViT-B/32" in warning
    with torch.no_grad():
        again = load_model("emoclip-b32", descriptions=DescriptionSet(
            classes=[f"t{i}" for i in range(12)], descriptions=[[t] for t in fx["texts"]]))(fx["video"])
    assert (again - fx["logits"] * float(np.exp(2.0 - 4.0))).abs().max() <= ATOL  # served from the cache


# --- CLI ---------------------------------------------------------------------------------------------------
def test_cli_predict_with_the_tiny_model(capsys):
    from app_helpers import feat_clip

    from dferclip.cli import main

    clip = feat_clip("single_face.mp4")
    assert main(["predict", str(clip), "--model", "random:emoclip-tiny", "--json", "--no-timeline"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["probabilities"]) == 7 and abs(sum(out["probabilities"].values()) - 1) < 1e-4


def test_cli_evaluate_with_the_tiny_model(tmp_path, capsys):
    from PIL import Image

    from dferclip.cli import main

    rng = np.random.default_rng(0)
    lines = []
    for clip in range(4):
        folder = tmp_path / "frames" / f"clip{clip}"
        folder.mkdir(parents=True)
        for f in range(10):
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"{f:05d}.jpg")
        lines.append(f"{folder} 10 {clip % 7 + 1}")
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.json"
    assert main(["evaluate", "--checkpoint", "random:emoclip-tiny", "--data", str(tmp_path / "test.txt"),
                 "--output", str(out), "--workers", "0", "--device", "cpu"]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 4 and np.array(res["confusion"]).shape == (7, 7) and np.array(res["confusion"]).sum() == 4
