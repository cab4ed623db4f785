"""FineCLIPER on tiny random towers: PN descriptors, losses, the inference rule, adapters as the only trainable
parts, the AIM block layout, fusion, parameter counts, checkpoint round trip, and training with the trainer."""
import json

import pytest
import torch
import torch.nn.functional as F

import proof_fineclipper
from proof_fineclipper import S, T, distinct_videos
from proofs import SEED, assert_bounds

import dferclip
from dferclip.config import get_config
from dferclip.models import fineclipper  # noqa: F401  (registers the family)
from dferclip.models.adapters import AdaptedBlock, route
from dferclip.models.fineclipper import (
    VARIANTS,
    FineCLIPER,
    FineSettings,
    fineclipper_config,
)
from dferclip.text.descriptions import DescriptionSet, official_descriptions



def build(variant="base", **settings) -> FineCLIPER:
    return proof_fineclipper.build(variant, seed=0, **settings)


def video(b=2, seed=1):
    return torch.randn(b, T, 3, S, S, generator=torch.Generator().manual_seed(seed))


def perturb_adapters(model, std=0.05):
    """Adapters start at zero (identity); give them weights so that tests see their effect."""
    with torch.no_grad():
        for group in model.param_groups().values():
            for p in group:
                p.add_(torch.randn_like(p) * std)


def test_pn_descriptors_use_the_papers_wording_and_the_negative_word():
    m = build()
    pos, neg, index = m.descriptor_texts()
    assert pos[0] == "A person with an expression of happiness"
    assert neg[0] == "A person with an expression of no happiness"
    assert len(pos) == len(neg) == m.num_classes and index == list(range(m.num_classes))
    less = build(label_templates=["A person with an expression of {name}", "A person with an expression of less {name}"])
    assert less.descriptor_texts()[1][2] == "A person with an expression of less " + m.class_names[2]
    ds = DescriptionSet(["joy", "gloom"], [["lifted cheeks", "a wide smile"], ["drooping lids"]])
    alt = build(descriptors="descriptions")
    alt.set_descriptions(ds)
    pos, neg, index = alt.descriptor_texts()
    assert pos == ["lifted cheeks", "a wide smile", "drooping lids"] and index == [0, 0, 1]
    assert neg == ["A person with an expression of no joy"] * 2 + ["A person with an expression of no gloom"]
    assert alt.encode_classes().shape == (2, 2, alt.embed_dim)


def test_positive_and_negative_descriptors_go_through_separate_adapters():
    m = build()
    m.eval()
    with torch.no_grad():
        before = m.encode_classes()
        for p in [p for b in m.text_blocks for p in b.adapters["neg"].parameters()]:
            p.add_(torch.randn_like(p) * 0.1)
        after = m.encode_classes()
    torch.testing.assert_close(after[:, 0], before[:, 0])  # positives untouched
    assert (after[:, 1] - before[:, 1]).abs().max() > 1e-3


def test_fresh_adapters_compute_exactly_the_frozen_clip():
    m = build()
    plain = dferclip.build_model(get_config("fineclipper-tiny").replace(family="dferclip"))
    plain.clip.load_state_dict({k.replace(".block.", "."): v for k, v in m.clip.state_dict().items()
                                if ".adapters." not in k})
    x = video()[:, 0]
    with torch.no_grad(), route(("video", len(x))):
        adapted = m.clip.visual(x)
    torch.testing.assert_close(adapted, plain.clip.visual(x).detach())


def test_aim_layout_serial_after_attention_and_scaled_parallel_mlp_adapter():
    m = build()
    perturb_adapters(m)
    blk = m.visual_blocks[0]
    assert isinstance(blk, AdaptedBlock)
    b, ad = blk.block, blk.adapters["video"]
    x = torch.randn(3, 5, b.ln_1.normalized_shape[0])
    with torch.no_grad():
        a = b.attention(q_x=b.ln_1(x))
        x1 = x + a + ad.serial(a)
        h = b.ln_2(x1)
        expected = x1 + b.mlp(h) + 0.5 * ad.parallel(h)
        with route(("video", 3)):
            got = blk(x)
        with route(("parsing", 1), ("video", 2)):  # rows are routed to their own stream's adapters
            mixed = blk(x)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(mixed[1:], expected[1:])
    assert ad.scale == 0.5 and ad.serial.down.out_features == round(b.ln_1.normalized_shape[0] * 0.5)


def test_inference_rule_is_positive_minus_weighted_negative():
    m = build(negative_weight=0.7)
    perturb_adapters(m)
    m.eval()
    x = video()
    with torch.no_grad():
        logits = m(x)
        emb = m.encode_video(x)
        pos, neg = m.positive_negative_scores(emb)
        c = m.class_embeddings()
    v = F.normalize(emb, dim=-1)
    torch.testing.assert_close(pos, v @ c[:, 0].t())
    torch.testing.assert_close(logits, 100 * (pos - 0.7 * neg))
    torch.testing.assert_close(m.score(emb, c), logits)
    assert torch.equal(logits.argmax(-1), (pos - 0.7 * neg).argmax(-1))
    plain = m.score(emb, c[:, 0])  # plain (C, D) class embeddings: CLIP scoring
    torch.testing.assert_close(plain, 100 * pos)


@pytest.mark.parametrize("loss", ["pn-ce", "diff-ce", "pn-margin"])
def test_losses(loss):
    m = build(loss=loss, negative_loss_weight=0.5, margin=0.2)
    perturb_adapters(m)
    m.train()
    y = torch.tensor([1, 4])
    logits = m(video())
    pos, neg = m._last.pos, m._last.neg
    got = m.loss(logits, y)
    if loss == "pn-ce":
        want = F.cross_entropy(100 * pos, y) + 0.5 * F.cross_entropy(-100 * neg, y)
    elif loss == "diff-ce":
        want = F.cross_entropy(logits, y)
    else:
        idx = y[:, None]
        want = F.cross_entropy(100 * pos, y) + 0.5 * F.relu(neg.gather(1, idx) - pos.gather(1, idx) + 0.2).mean()
    torch.testing.assert_close(got, want)
    with pytest.raises(RuntimeError, match="last forward"):
        m.loss(logits, y)  # the stored outputs are used once


@pytest.mark.slow
def test_pn_loss_pulls_towards_own_positive_and_away_from_own_negative():
    figures = proof_fineclipper.pn_figures(SEED)
    print(figures)
    assert_bounds(proof_fineclipper.PN_BOUNDS, figures)


@pytest.mark.parametrize("variant", ["base", "full"])
def test_only_adapters_temporal_and_fusion_get_gradients(variant):
    m = build(variant)
    allowed = {id(p) for g in m.param_groups().values() for p in g}
    names = {n for n, p in m.named_parameters() if id(p) in allowed}
    assert all(".adapters." in n or n.startswith(("temporal.", "fusion.")) for n in names)
    assert not any(p.requires_grad for p in m.parameters() if id(p) not in allowed)
    m.train()
    x = m.prepare_inputs(video(), captions=["the mouth opens slowly", None]) if variant == "full" else video()
    opt = torch.optim.SGD([p for g in m.param_groups().values() for p in g], 0.1)
    for _ in range(2):  # after one step the zero-initialised up-projections let gradients reach the rest
        opt.zero_grad()
        m.loss(m(x), torch.tensor([0, 1])).backward()
        opt.step()
    got = {n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    frozen_with_grad = {n for n, p in m.named_parameters() if id(p) not in allowed and p.grad is not None}
    assert not frozen_with_grad
    expected_streams = VARIANTS[variant]
    for stream in expected_streams:
        if stream != "caption":
            assert any(f"visual.transformer.resblocks.0.adapters.{stream}.serial.down" in n for n in got), stream
    assert any(".adapters.pos." in n for n in got) and any(".adapters.neg." in n for n in got)
    assert ("full" == variant) == any(".adapters.caption." in n for n in got)


def test_trainable_parameter_counts_at_vit_b16_are_near_the_papers_table_1():
    paper = {"base": 13e6, "mid": 19e6, "text": 14e6, "full": 20e6}
    counts = {}
    for variant in paper:
        m = dferclip.build_model(fineclipper_config(variant))
        counts[variant] = m.trainable_parameter_count()["total"]
        assert abs(counts[variant] - paper[variant]) < 1.2e6, (variant, counts[variant])
    # one AIM adapter on ViT-B (768 -> 192 -> 768): 295,872 weights; 2 per block x 12 blocks
    assert m.trainable_parameter_count()["visual_adapters"] == 24 * 295_872 + 2 * 24 * (2 * 768 * 96 + 96 + 768)
    assert counts["base"] < counts["text"] < counts["mid"] < counts["full"]


def test_fusion_weights_are_softmax_normalised_and_skip_missing_captions():
    m = build("full", fusion="learned")
    with torch.no_grad():
        m.fusion.logits.copy_(torch.tensor([1.0, 0.0, -1.0, 0.5]))
    inputs = m.prepare_inputs(video(), captions=["the brows rise", ""])
    w = m.stream_weights(inputs)
    torch.testing.assert_close(w[0], torch.tensor([1.0, 0.0, -1.0, 0.5]).softmax(-1))
    assert w[1, 3] == 0 and torch.isclose(w[1].sum(), torch.tensor(1.0))
    fixed = build("mid", fusion="fixed", fixed_video_weight=0.7)
    wf = fixed.stream_weights(fixed.prepare_inputs(video()))
    torch.testing.assert_close(wf, torch.tensor([[0.7, 0.15, 0.15]] * 2))
    gated = build("mid", fusion="gated")
    assert gated.stream_weights(gated.prepare_inputs(video())).shape == (2, 3)


def test_a_caption_only_model_gives_even_scores_not_nan_for_a_clip_without_caption():
    from dferclip.text.tokens import tokenize

    m = build("text", streams=["caption"])
    perturb_adapters(m)
    m.eval()
    with torch.no_grad():
        logits = m(m.prepare_inputs(video(), captions=[None, "the brows rise"]))
        assert torch.isfinite(logits).all()
        assert torch.equal(logits[0], torch.zeros_like(logits[0])) and logits[1].std() > 0
        # tokens without a presence flag: an empty caption (start and end tokens only) is no caption
        tokens = tokenize(["", "the brows rise"], m.clip.context_length)
        w = m.stream_weights({"video": video(), "caption_tokens": tokens})
    assert w[:, 0].tolist() == [0.0, 1.0]
    m.train()
    loss = m.loss(m(m.prepare_inputs(video(), captions=["", "the eyes widen"])), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_captions_change_the_video_embedding_and_missing_mid_level_is_rendered():
    m = build("full")
    perturb_adapters(m)
    m.eval()
    x = video()
    with torch.no_grad():
        a = m.encode_video(m.prepare_inputs(x, captions=["the mouth corners rise", "the eyes widen"]))
        b = m.encode_video(m.prepare_inputs(x, captions=["the brows lower", "the eyes widen"]))
        auto = m.encode_video(x)  # renders computed by the model, no captions
    assert (a[0] - b[0]).abs().max() > 1e-4 and torch.allclose(a[1], b[1])
    assert auto.shape == a.shape


def test_settings_are_validated():
    with pytest.raises(ValueError, match="streams"):
        FineSettings(streams=("video", "audio"))
    with pytest.raises(ValueError, match="loss"):
        FineSettings(loss="focal")
    with pytest.raises(ValueError, match="zero-shot"):
        FineSettings(streams=("video", "caption"), mode="zero-shot")
    with pytest.raises(ValueError, match="unknown FineCLIPER settings"):
        FineSettings.from_extra({"stream": ["video"]})
    assert FineSettings.from_extra({"variant": "mid"}).streams == ("video", "parsing", "landmarks")


def test_zero_shot_variant_learns_from_captions_only():
    m = build("base", mode="zero-shot")
    assert set(m.param_groups()) >= {"visual_adapters", "text_adapters"} and m.negative_weight == 0
    assert not any(".adapters.pos." in n or ".adapters.neg." in n for n, _ in m.named_parameters())
    figures = proof_fineclipper.zero_shot_figures(SEED)  # the caption loss falls and the adapted captions match
    print(figures)
    assert_bounds(proof_fineclipper.ZERO_SHOT_BOUNDS, figures)
    m.train()
    m(m.prepare_inputs(distinct_videos(m), captions=[None] * 4))
    with pytest.raises(dferclip.DferclipError, match="captions"):
        m.loss(torch.zeros(4, 7), torch.zeros(4, dtype=torch.long))


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    m = build("full")
    perturb_adapters(m)
    m.eval()
    inputs = m.prepare_inputs(video(), captions=["the jaw drops", None])
    with torch.no_grad():
        before = m(inputs)
    dferclip.save_model(m, tmp_path / "fc")
    info = json.loads((tmp_path / "fc" / "config.json").read_text())
    assert info["model"]["family"] == "fineclipper" and info["model"]["extra"]["streams"][-1] == "caption"
    loaded = dferclip.load_model(tmp_path / "fc")
    assert isinstance(loaded, FineCLIPER) and loaded.streams == m.streams
    with torch.no_grad():
        after = loaded(inputs)
    assert torch.equal(before, after)


def test_random_source_and_official_classes():
    m = dferclip.load_model("random:fineclipper-tiny")
    assert isinstance(m, FineCLIPER) and m.class_names == official_descriptions(7).classes
    assert m.weights_info["trained"] is False


@pytest.mark.slow
def test_tiny_fineclipper_learns_synthetic_expressions_with_the_trainer(tmp_path):
    """Frozen random towers + adapters through dferclip.train: the loss falls and the held-out UAR is above
    chance (tests/proof_fineclipper.py), and the run saves a loadable, trained FineCLIPER."""
    figures = proof_fineclipper.trainer_figures(SEED, folder=tmp_path)
    print(figures)
    assert_bounds(proof_fineclipper.TRAINER_BOUNDS, figures)
