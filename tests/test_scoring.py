"""Embedding caches and scoring: encoder calls counted, results equal to from-scratch computations."""
import pytest
import torch
import torch.nn.functional as F

import dferclip
from dferclip.metrics import compute_metrics
from dferclip.scoring import (
    COMBINE_MODES,
    LRUCache,
    Scorer,
    TextEmbeddingCache,
    VideoEmbeddingCache,
    encode_clip,
    model_fingerprint,
)


class Counting:
    """Counts the texts the model's text tower actually encodes (both paths), by wrapping its methods."""

    def __init__(self, model):
        self.learned, self.zero_shot = [], []
        self.videos = 0
        enc_prompts, enc_texts, enc_video = model.encode_prompts, model.encode_texts, model.encode_video

        def encode_prompts(texts, class_index):
            self.learned += list(zip(class_index, texts))
            return enc_prompts(texts, class_index)

        def encode_texts(texts):
            self.zero_shot += list(texts)
            return enc_texts(texts)

        def encode_video(video):
            self.videos += video.shape[0]
            return enc_video(video)

        model.encode_prompts, model.encode_texts, model.encode_video = encode_prompts, encode_texts, encode_video

    def reset(self):
        self.learned, self.zero_shot, self.videos = [], [], 0


@pytest.fixture
def model():
    torch.manual_seed(0)
    return dferclip.load_model("random:dferclip-tiny")


@pytest.fixture(scope="module")
def videos():
    torch.manual_seed(1)
    return torch.rand(3, 16, 3, 64, 64)


def embed(model, videos):
    with torch.no_grad():
        return F.normalize(model.encode_video(videos), dim=-1), model.zero_shot_video(videos)


def edited(ds, cls_index, text):
    descs = [list(d) for d in ds.descriptions]
    descs[cls_index] = [text]
    return ds.with_descriptions(descs)


def test_edit_reencodes_only_the_changed_class(model, videos):
    count = Counting(model)
    scorer = Scorer(model)
    learned_v, zs_v = embed(model, videos)
    ds = model.descriptions
    n_templates = len(scorer.templates)
    scorer.score(learned_v, ds, "learned")
    scorer.score(zs_v, ds, "zero-shot")
    assert len(count.learned) == 7 and len(count.zero_shot) == 7 * n_templates
    count.reset()
    scorer.score(learned_v, ds, "learned", "mean-similarity")
    scorer.score(zs_v, ds, "zero-shot", "max")
    assert count.learned == [] and count.zero_shot == []  # nothing changed, nothing encoded

    new = edited(ds, 3, "deeply furrowed brows and a clenched jaw.")
    s_learned = scorer.score(learned_v, new, "learned")
    s_zero = scorer.score(zs_v, new, "zero-shot")
    assert count.learned == [(3, "deeply furrowed brows and a clenched jaw.")]
    assert len(count.zero_shot) == n_templates and all("clenched jaw" in t for t in count.zero_shot)

    # scores after the edit equal a from-scratch computation with the edited descriptions
    fresh = dferclip.load_model("random:dferclip-tiny")
    fresh.load_state_dict(model.state_dict())
    fresh.set_descriptions(new)
    with torch.no_grad():
        expected = fresh(videos)
        expected_zero = fresh.score(fresh.zero_shot_video(videos), fresh.zero_shot_classes(new))
    torch.testing.assert_close(s_learned.logits, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(s_zero.logits, expected_zero, atol=1e-4, rtol=1e-5)

    # the same text in another class is a different learned prompt (class-specific contexts)
    count.reset()
    moved = edited(new, 5, "deeply furrowed brows and a clenched jaw.")
    scorer.score(learned_v, moved, "learned")
    scorer.score(zs_v, moved, "zero-shot")
    assert count.learned == [(5, "deeply furrowed brows and a clenched jaw.")]
    # only the templates that name the class make new texts; the others are cached already
    assert len(count.zero_shot) == sum("{name}" in t for t in scorer.templates) < n_templates


def test_several_descriptors_combine_modes(model, videos):
    scorer = Scorer(model)
    learned_v, zs_v = embed(model, videos)
    base = model.descriptions
    ds = base.with_descriptions([d + [f"extra cue {i}", "a face"] for i, d in enumerate(base.descriptions)])
    with torch.no_grad():
        classes = model.encode_classes(ds)
        per_desc = [F.normalize(model.encode_prompts(d, [c] * len(d)), dim=-1) for c, d in enumerate(ds.descriptions)]
    expected = {
        "mean-embedding": model.score(learned_v, classes),
        "mean-similarity": torch.stack([100 * (learned_v @ p.t()).mean(1) for p in per_desc], 1),
        "max": torch.stack([100 * (learned_v @ p.t()).max(1).values for p in per_desc], 1),
    }
    for combine in COMBINE_MODES:
        s = scorer.score(learned_v, ds, "learned", combine)
        torch.testing.assert_close(s.logits, expected[combine], atol=1e-4, rtol=1e-5)
        # per-descriptor contributions add up exactly to each class's logit
        torch.testing.assert_close(torch.stack([c.sum(1) for c in s.contributions], 1), s.logits, atol=1e-4,
                                   rtol=1e-5)
        assert [c.shape for c in s.similarities] == [(3, 3)] * 7
        z = scorer.score(zs_v, ds, "zero-shot", combine)
        torch.testing.assert_close(torch.stack([c.sum(1) for c in z.contributions], 1), z.logits, atol=1e-4,
                                   rtol=1e-5)
    with torch.no_grad():
        zs_expected = model.score(zs_v, model.zero_shot_classes(ds))
    torch.testing.assert_close(scorer.score(zs_v, ds, "zero-shot").logits, zs_expected, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="combine"):
        scorer.score(learned_v, ds, "learned", "median")


def test_fingerprint_follows_the_weights(model, videos):
    count = Counting(model)
    scorer = Scorer(model)
    learned_v, _ = embed(model, videos)
    fp = model_fingerprint(model)
    assert model_fingerprint(model) == fp
    scorer.score(learned_v, model.descriptions, "learned")
    with torch.no_grad():
        model.prompt.ctx.add_(0.5)  # an optimiser step changes the learned contexts in place
    assert model_fingerprint(model) != fp
    count.reset()
    s = scorer.score(learned_v, model.descriptions, "learned")
    assert len(count.learned) == 7
    with torch.no_grad():
        torch.testing.assert_close(s.logits, model(videos), atol=1e-4, rtol=1e-5)
    other = dferclip.load_model("random:dferclip-tiny")
    assert model_fingerprint(other) != model_fingerprint(model)


def test_video_cache_encodes_each_clip_once_and_persists(model, videos, tmp_path):
    count = Counting(model)
    cache = VideoEmbeddingCache(maxsize=2, folder=tmp_path)
    a = cache.get(model, videos[:1])
    b = cache.get(model, videos[:1].clone())
    assert count.videos == 1 and torch.equal(a.learned, b.learned)
    expected = encode_clip(model, videos[:1])
    torch.testing.assert_close(a.learned, expected.learned)
    torch.testing.assert_close(a.zero_shot, expected.zero_shot)
    cache.get(model, videos[1:2])
    cache.get(model, videos[2:3])
    assert len(cache) == 2  # bounded
    count.reset()
    reopened = VideoEmbeddingCache(folder=tmp_path)
    c = reopened.get(model, videos[:1])
    assert count.videos == 0 and torch.equal(c.learned, a.learned)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_a_model_without_learned_prompts_persists_its_one_embedding(tmp_path):
    """EmoCLIP's clip embedding serves both modes (one tensor): the disk cache writes it and reads it back."""
    torch.manual_seed(0)
    emo = dferclip.load_model("random:emoclip-tiny")
    video = torch.rand(1, emo.input_config.num_frames, 3, emo.input_config.image_size, emo.input_config.image_size)
    first = VideoEmbeddingCache(folder=tmp_path).get(emo, video)
    assert first.learned is first.zero_shot  # encoded once
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    again = VideoEmbeddingCache(folder=tmp_path).get(emo, video)
    assert torch.equal(again.zero_shot, first.zero_shot) and torch.equal(again.learned, first.learned)


def test_text_cache_is_bounded(model):
    cache = TextEmbeddingCache(maxsize=3)
    cache.zero_shot(model, ["a", "b", "c", "d", "a"])
    assert len(cache) == 3 and cache.encoded == 4
    lru = LRUCache(2)
    lru.put(1, "x"), lru.put(2, "y"), lru.get(1), lru.put(3, "z")
    assert 1 in lru and 2 not in lru


def test_uar_war_from_scores_against_hand_computed(model):
    """Clips whose embedding is a class embedding are predicted as that class: a known confusion."""
    scorer = Scorer(model)
    ds = model.descriptions
    with torch.no_grad():
        w = model.encode_classes(ds)
    labels = [0, 0, 0, 1, 1, 2, 3, 3]
    predicted = [0, 0, 1, 1, 2, 2, 3, 0]
    s = scorer.score(w[predicted], ds, "learned")
    assert s.predictions.tolist() == predicted
    m = compute_metrics(labels, s.predictions.tolist(), 7)
    # recall: class 0 2/3, class 1 1/2, class 2 1/1, class 3 1/2; classes 4-6 absent
    assert m.uar == pytest.approx((200 / 3 + 50 + 100 + 50) / 4)
    assert m.war == pytest.approx(5 / 8 * 100)
    assert m.confusion[0].tolist()[:4] == [2, 1, 0, 0] and m.confusion[3].tolist()[:4] == [1, 0, 0, 1]


def test_disk_cache_is_bounded_and_evicts_the_least_recently_used(model, videos, tmp_path):
    one = VideoEmbeddingCache(maxsize=1, folder=tmp_path)
    one.get(model, videos[:1])
    entry = next(tmp_path.glob("*.safetensors")).stat().st_size
    cache = VideoEmbeddingCache(maxsize=1, folder=tmp_path, max_bytes=int(2.5 * entry))
    import os
    import time

    first = next(tmp_path.glob("*.safetensors"))
    os.utime(first, (time.time() - 100, time.time() - 100))
    cache.get(model, videos[1:2])
    time.sleep(0.01)
    cache.get(model, videos[:1])  # a disk hit: now the most recently used
    cache.get(model, videos[2:3])  # over the bound: the least recently used (videos[1]) goes
    files = list(tmp_path.glob("*.safetensors"))
    assert cache.disk_bytes() <= 2.5 * entry and len(files) == 2 and first in files
    count = Counting(model)
    VideoEmbeddingCache(maxsize=1, folder=tmp_path).get(model, videos[1:2])
    assert count.videos == 1  # evicted, so encoded again


def test_cache_keys_hold_device_and_precision(model, videos):
    cache = TextEmbeddingCache()
    cache.zero_shot(model, ["a smile"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = cache.zero_shot(model, ["a smile"])
    assert cache.encoded == 2 and bf16.dtype == torch.float32 and bf16.device.type == "cpu"
    with torch.no_grad():
        fp32 = model.class_embeddings()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.class_embeddings()
        again = model.class_embeddings()
    assert low is not fp32 and again is not low and torch.equal(again, fp32)


def test_scoring_makes_every_tensor_on_the_embeddings_device(model, videos):
    """Text features cached on the CPU, clip embeddings on another device: the 'meta' device computes nothing
    but fails on any tensor made elsewhere without saying where, so the whole scoring path is checked."""
    learned, _ = embed(model, videos)
    scorer = Scorer(model)
    ds = model.descriptions.with_descriptions([list(d) + ["another look"] for d in model.descriptions.descriptions])
    for combine in COMBINE_MODES:
        on_cpu = scorer.score(learned, ds, "learned", combine)
        on_meta = scorer.score(learned.to("meta"), ds, "learned", combine)
        assert on_meta.logits.device.type == "meta" and on_meta.logits.shape == on_cpu.logits.shape
        assert all(c.device.type == "meta" for c in on_meta.contributions)
