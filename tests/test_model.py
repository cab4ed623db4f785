"""Model behaviour on small random models: architecture as data, caching, zero-shot, ensembling."""
import sys
import threading
import time

import pytest
import torch
import torch.nn.functional as F

import dferclip
from dferclip.config import CLIP_MEAN, CLIP_STD, InputConfig, ModelConfig
from dferclip.errors import DescriptionError
from dferclip.text.descriptions import (
    DescriptionSet,
    diff_description_sets,
    load_description_set,
    official_descriptions,
    save_description_set,
    validate_name,
)


def _video(model, b=2, t=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.input_config.image_size
    return torch.rand(b, t, 3, s, s, generator=g)


def test_configs_are_data_and_round_trip():
    for name in dferclip.available_configs():
        cfg = dferclip.get_config(name)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"family": "dferclip", "layers": 3})
    cfg = dferclip.get_config("dferclip-tiny").replace(
        temporal=dferclip.get_config("dferclip-tiny").temporal.__class__(layers=2, heads=2, dim_head=16, mlp_dim=32),
        input=InputConfig(num_frames=8, image_size=64),
    )
    model = dferclip.build_model(cfg).eval()
    assert len(model.temporal.layers) == 2 and model.temporal.pos_embedding.shape[1] == 9
    with torch.no_grad():
        assert model(_video(model, t=8)).shape == (2, 7)


@pytest.mark.parametrize("name", ["dferclip-vit-b-32", "dferclip-vit-b-16"])
def test_real_backbones_run(name):
    model = dferclip.load_model(f"random:{name}")
    patch = model.clip.visual.conv1.weight.shape[-1]
    assert patch == {"dferclip-vit-b-32": 32, "dferclip-vit-b-16": 16}[name]
    with torch.no_grad():
        logits = model(_video(model, b=1, t=2))
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()
    assert logits.abs().max() <= 100.0 + 1e-3  # cosine * 100


def test_logits_are_scaled_cosines(tiny_model):
    video = _video(tiny_model)
    with torch.no_grad():
        v = F.normalize(tiny_model.encode_video(video), dim=-1)
        t = tiny_model.encode_classes()
        assert torch.allclose(tiny_model(video), 100 * v @ t.T, atol=1e-4)


def test_frame_order_matters_and_short_clips_work(tiny_model):
    video = _video(tiny_model)
    with torch.no_grad():
        a = tiny_model.encode_video(video)
        b = tiny_model.encode_video(video.flip(1))
        assert not torch.allclose(a, b, atol=1e-4)
        assert tiny_model(video[:, :5]).shape == (2, 7)
        with pytest.raises(ValueError, match="at most 16 frames"):
            tiny_model(torch.rand(1, 17, 3, 64, 64))


def test_class_embeddings_cached_until_weights_change():
    model = dferclip.load_model("random:dferclip-tiny")
    calls = []
    original = model.encode_classes
    model.encode_classes = lambda *a, **k: calls.append(1) or original(*a, **k)
    video = _video(model)
    with torch.no_grad():
        first = model(video)
        assert torch.equal(model(video), first)
        assert len(calls) == 1
        state = model.state_dict()
        state["prompt.ctx"] = torch.randn_like(state["prompt.ctx"])
        model.load_state_dict(state)
        assert not torch.allclose(model(video), first)
        assert len(calls) == 2
    model.train()
    model(video).sum().backward()  # training re-encodes so gradients reach the contexts
    assert model.prompt.ctx.grad is not None and model.prompt.ctx.grad.abs().sum() > 0
    assert len(calls) == 3


class _SlowRead:
    """A ``_class_cache`` attribute whose every read yields the thread for a moment: widens the window between
    a check of the cached entry and a later read of it, so a check-then-read race shows on most iterations."""

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        time.sleep(0.002)
        return obj.__dict__.get("_class_cache")

    def __set__(self, obj, value):
        obj.__dict__["_class_cache"] = value


@pytest.mark.parametrize("differ_by", ["descriptions", "autocast dtype"])
def test_class_embeddings_cache_is_safe_for_concurrent_events(differ_by):
    """Two app events at once on one model (two threads; different description sets or autocast dtypes) each
    always get their own class embeddings from the one-entry cache."""
    model = dferclip.load_model("random:dferclip-tiny").eval()
    other = official_descriptions(7).with_descriptions([[f"a face showing {c} clearly"] for c in model.class_names])
    if differ_by == "descriptions":
        jobs = [(model.descriptions, None), (other, None)]
    else:
        jobs = [(model.descriptions, None), (model.descriptions, torch.bfloat16)]

    def run(ds, dtype, cached):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            if not cached:
                return model.encode_classes(ds)  # uncached: what the entry must hold
            return model.class_embeddings(ds) if differ_by == "descriptions" else model.class_embeddings()

    expected = [run(ds, dtype, cached=False) for ds, dtype in jobs]
    assert not torch.allclose(expected[0].float(), expected[1].float())
    model.__class__ = type("SlowCacheRead", (type(model),), {"_class_cache": _SlowRead()})
    start, wrong, errors = threading.Barrier(2), [], []

    def hammer(i):
        try:
            start.wait()
            for _ in range(40):
                got = run(*jobs[i], cached=True)
                if got.dtype != expected[i].dtype or not torch.equal(got, expected[i]):
                    wrong.append(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert not wrong, f"{len(wrong)} of 80 calls returned the other thread's class embeddings"


def test_several_descriptions_per_class_are_ensembled(tiny_model):
    base = tiny_model.descriptions
    extra = base.with_descriptions([d + ["an extra cue"] if i == 0 else d for i, d in enumerate(base.descriptions)])
    with torch.no_grad():
        one = tiny_model.encode_classes(base)
        two = tiny_model.encode_classes(extra)
        feats = F.normalize(tiny_model.encode_prompts(extra.descriptions[0], [0, 0]), dim=-1)
    assert torch.allclose(two[0], F.normalize(feats.mean(0), dim=-1), atol=1e-5)
    assert torch.allclose(two[1:], one[1:], atol=1e-6)


def test_zero_shot_path_uses_clip_normalisation_and_templates(tiny_model):
    video = _video(tiny_model)
    with torch.no_grad():
        zs = tiny_model.zero_shot_video(video)
        x = InputConfig(mean=CLIP_MEAN, std=CLIP_STD).normalize(video)
        frames = F.normalize(tiny_model.clip.encode_image(x.flatten(0, 1)), dim=-1).view(2, 16, -1)
        assert torch.allclose(zs, F.normalize(frames.mean(1), dim=-1), atol=1e-5)
        texts, index = tiny_model.zero_shot_texts()
        assert len(texts) == 7 * len(tiny_model.config.zero_shot_templates)
        first_class = [t for t, i in zip(texts, index) if i == 0]
        assert all("a smiling mouth" in t for t in first_class)
        assert any("happiness" in t for t in first_class)
        classes = tiny_model.zero_shot_classes()
        assert classes.shape == (7, tiny_model.embed_dim)
        assert torch.allclose(classes.norm(dim=-1), torch.ones(7), atol=1e-5)


def test_description_sets_as_data(tmp_path):
    dfew = official_descriptions(7)
    mafw = official_descriptions(11)
    assert dfew.classes == ["happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear"]
    assert mafw.classes[7:] == ["contempt", "anxiety", "helplessness", "disappointment"]
    assert dfew.provenance["licence"] == "MIT"
    edited = dfew.with_descriptions([["a big grin"]] + dfew.descriptions[1:], name="mine")
    path = save_description_set(edited, tmp_path)
    assert path == tmp_path / "mine.json"
    again = save_description_set(edited, tmp_path)
    assert load_description_set(again).version == 2
    assert diff_description_sets(dfew, load_description_set(path)) == [
        {"class": "happiness", "removed": [dfew.descriptions[0][0]], "added": ["a big grin"]}
    ]
    for bad in ["../escape", "a/b", ".hidden", "", "x" * 101, "con\x00"]:
        with pytest.raises(DescriptionError):
            validate_name(bad)
    with pytest.raises(DescriptionError, match="no description"):
        DescriptionSet(classes=["a"], descriptions=[["  "]])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind
