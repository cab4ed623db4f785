"""Scores under reduced precision (issue #25): on CUDA the models run under bf16 autocast
(dferclip.runtime.inference); CPU bf16 autocast stands in for it here. The towers run in bf16, but every score
(DFER-CLIP's logits, FineCLIPER's positive/negative cosines and logits, the losses' inputs) is normalised and
multiplied in fp32 with autocast off (dferclip.models.blocks.fp32_cosine_logits), and the class an explanation
takes by default is the one the prediction shows, computed the way the prediction computes it.

Tolerances. bf16 keeps 8 significant bits: one step at 1 is 2**-8 = 3.9e-3, so a cosine that went through the
bf16 towers is trusted to about that, and a logit (100 x cosine) to BF16_LOGIT_ATOL = 100 * 2**-8 = 0.39. On
the official conformance fixture the towers' bf16 rounding moved the logits by at most 0.063 (default kernels),
0.090 (AVX2) and 0.096 (AVX-512) and the probabilities by at most 3.5e-3, so the bound keeps a margin of 4x
over every kernel set; the fixture's top-1/top-2 margins (2.6 and 2.1) exceed twice the bound, so its top class
cannot flip. The last matmul itself is fp32: given the same (bf16) embeddings, the scores equal an fp32
computation up to fp32 rounding (FP32_ATOL, 1e-5 on logits of magnitude < 100, whose fp32 step is < 1e-5),
where the bf16 matmul this replaces was off by 0.04-0.05 on the same embeddings.
"""
import types

import pytest
import torch
import torch.nn.functional as F

import dferclip
from dferclip import runtime
from dferclip.explain import explain_clip, predicted_class
from dferclip.models.blocks import fp32_cosine_logits
from dferclip.predict import score_sequences
from dferclip.weights.checkpoints import read_official

BF16 = torch.bfloat16
BF16_LOGIT_ATOL = 100 * 2**-8  # one bf16 step of a unit cosine, times the logit scale
BF16_PROB_ATOL = 1e-2  # measured <= 3.5e-3 on the fixture
FP32_ATOL = 1e-5


def _cos(v, c):
    """cos(v, c) (B, C), computed in fp32 outside any autocast: the reference."""
    return F.normalize(v.float(), dim=-1) @ F.normalize(c.float(), dim=-1).t()


# --- the helper -------------------------------------------------------------------------------------------
def test_fp32_cosine_logits_is_fp32_under_autocast():
    g = torch.Generator().manual_seed(0)
    v, c = torch.randn(4, 64, generator=g).to(BF16), torch.randn(7, 64, generator=g).to(BF16)
    with runtime.autocast("cpu", BF16):
        out = fp32_cosine_logits(v, c, 100.0)
        plain = 100.0 * F.normalize(v, dim=-1) @ F.normalize(c, dim=-1).t()  # what the models did before
    assert out.dtype == torch.float32 and plain.dtype == BF16
    ref = 100.0 * _cos(v, c)
    assert (out - ref).abs().max() <= FP32_ATOL
    assert (plain.float() - ref).abs().max() > FP32_ATOL  # the bf16 matmul rounds: this test can tell


# --- DFER-CLIP: the official conformance fixture under bf16 autocast --------------------------------------
@pytest.fixture(scope="module")
def conformance(conformance_path):
    return dferclip.load_model(conformance_path), read_official(conformance_path)["conformance"]


def test_conformance_holds_under_bf16_autocast(conformance):
    model, fx = conformance
    ref = fx["logits"]  # the official implementation's fp32 forward
    with torch.no_grad(), runtime.autocast("cpu", BF16):
        logits = model(fx["input"])
        emb, classes = model.encode_video(fx["input"]), model.class_embeddings()
    assert emb.dtype == BF16  # the tower did run in bf16: this is not an fp32 run in disguise
    assert logits.dtype == torch.float32
    err = (logits - ref).abs().max()
    assert 0 < err <= BF16_LOGIT_ATOL, f"max |logit - fp32 reference| {float(err):.4f}"
    assert torch.equal(logits.argmax(-1), ref.argmax(-1))
    assert (logits.softmax(-1) - ref.softmax(-1)).abs().max() <= BF16_PROB_ATOL
    # the last matmul is exact fp32: the same bf16 embeddings scored in fp32 outside autocast
    assert (logits - model.logit_scale * _cos(emb, classes)).abs().max() <= FP32_ATOL


def test_dferclip_training_logits_are_fp32_under_autocast(tiny_model):
    model = tiny_model
    ic = model.input_config
    video = torch.rand(2, ic.num_frames, 3, ic.image_size, ic.image_size, generator=torch.Generator().manual_seed(0))
    model.train()
    try:
        with runtime.autocast("cpu", BF16):
            logits = model(video)
        assert logits.dtype == torch.float32 and logits.requires_grad
        model.loss(logits, torch.tensor([0, 1])).backward()  # gradients reach the bf16 towers through the casts
        assert model.prompt.ctx.grad is not None and model.prompt.ctx.grad.abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


# --- FineCLIPER --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fine():
    model = dferclip.load_model("random:fineclipper-tiny")
    ic = model.input_config
    g = torch.Generator().manual_seed(0)
    shape = (2, ic.num_frames, 3, ic.image_size, ic.image_size)
    # renders given: the face mesh is not what is tested here
    inputs = {k: ic.normalize(torch.rand(shape, generator=g)) for k in ("video", "parsing", "landmarks")}
    return model, inputs


def test_fineclipper_scores_are_fp32_and_exact_under_autocast(fine):
    model, inputs = fine
    with torch.no_grad():
        ref = model(inputs)
        with runtime.autocast("cpu", BF16):
            logits = model(inputs)
            emb, classes = model.encode_video(inputs), model.class_embeddings()
            pos, neg = model.positive_negative_scores(emb, classes)
            zero_shot = model.score(emb, classes[:, 0])  # plain (C, D) class embeddings
    assert emb.dtype == BF16
    assert logits.dtype == pos.dtype == neg.dtype == zero_shot.dtype == torch.float32
    # exact fp32 last matmul on the same bf16 embeddings
    assert (pos - _cos(emb, classes[:, 0])).abs().max() <= 1e-6
    assert (neg - _cos(emb, classes[:, 1])).abs().max() <= 1e-6
    expected = model.logit_scale * (_cos(emb, classes[:, 0]) - model.negative_weight * _cos(emb, classes[:, 1]))
    assert (logits - expected).abs().max() <= FP32_ATOL
    assert (zero_shot - model.logit_scale * _cos(emb, classes[:, 0])).abs().max() <= FP32_ATOL
    # and within bf16's budget of the fp32 forward: scale * (pos - w * neg) adds the two cosines' errors
    assert (logits - ref).abs().max() <= (1 + abs(model.negative_weight)) * BF16_LOGIT_ATOL


def test_fineclipper_loss_inputs_are_fp32_under_autocast(fine):
    model, inputs = fine
    model.train()
    try:
        with runtime.autocast("cpu", BF16):
            logits = model(inputs)
            out = model._last
        assert logits.dtype == out.pos.dtype == out.neg.dtype == torch.float32
        loss = model.loss(logits, torch.tensor([0, 1]))
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


# --- the class explained by default is the class the prediction shows ------------------------------------
def _near_tie(e32: torch.Tensor, e16: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, D) class embeddings with a tie that bf16 breaks the other way: class 0 wins by the fp32 video
    embedding ``e32``, class 1 by the bf16 one ``e16``; the other classes point away from the clip.

    c0, c1 = normalise(m +- w/2) with m orthogonal to w (so both have the same norm) and w chosen with
    e32.w = |d|^2/2 > 0 and e16.w ~ -|d|^2/2 < 0, d = e16 - e32 (unit vectors)."""
    e32, e16 = F.normalize(e32.double(), dim=-1), F.normalize(e16.double(), dim=-1)
    d = e16 - e32
    eps = float(d @ d) / 2
    w = -d + (eps + float(e32 @ d)) * e32
    m = e32 - (e32 @ w) / (w @ w) * w
    rows = [m + w / 2, m - w / 2] + [-e32 + 0.1 * torch.randn_like(e32) for _ in range(num_classes - 2)]
    return F.normalize(torch.stack(rows), dim=-1).float()


def test_explain_defaults_to_the_displayed_class_not_an_fp32_recomputation(monkeypatch):
    model = dferclip.load_model("random:dferclip-tiny")
    ic = model.input_config
    torch.manual_seed(0)
    frames = torch.rand(ic.num_frames, 3, ic.image_size, ic.image_size)
    positions = torch.arange(ic.num_frames)[None]
    e32 = score_sequences(model, frames, positions, dev="cpu", dtype=torch.float32)[1][0]
    e16 = score_sequences(model, frames, positions, dev="cpu", dtype=BF16)[1][0]
    classes = _near_tie(e32, e16, model.num_classes)
    monkeypatch.setattr(model, "class_embeddings", lambda: classes)
    fp32_top = int(score_sequences(model, frames, positions, dev="cpu", dtype=torch.float32)[0].argmax())
    bf16_top = int(score_sequences(model, frames, positions, dev="cpu", dtype=BF16)[0].argmax())
    assert (fp32_top, bf16_top) == (0, 1)  # the two paths disagree on this clip
    # the runtime predicts in bf16 (as on CUDA): the prediction shows class 1
    monkeypatch.setenv("DFERCLIP_DTYPE", "bf16")
    assert runtime.compute_dtype("cpu") == BF16
    assert predicted_class(model, frames) == 1
    ex = explain_clip(model, frames, occlusion=False)
    assert ex.target == f'class "{model.class_names[1]}"'  # not class 0, the fp32 explanation's own argmax
    # the maps are still made in fp32: the explained logit is the fp32 forward's
    assert ex.logit == pytest.approx(float(model.logit_scale * _cos(e32[None], classes[1:2])[0, 0]), abs=1e-3)
    # in fp32 the prediction and the explanation agree again
    monkeypatch.setenv("DFERCLIP_DTYPE", "fp32")
    assert explain_clip(model, frames, occlusion=False).target == f'class "{model.class_names[0]}"'


def test_app_explains_the_class_its_label_shows(tiny_model, monkeypatch):
    """The predict tab's "predicted class" is the top class of the prediction on the page (its record), not a
    recomputation; a record made by another model falls back to explain_clip's own prediction."""
    from dferclip.ui import explain as ui_explain
    from dferclip.ui.context import ClipRecord

    model = tiny_model
    ic = model.input_config
    video = torch.rand(1, ic.num_frames, 3, ic.image_size, ic.image_size)
    ingest = types.SimpleNamespace(video=video, input_config=ic)
    probs = torch.zeros(model.num_classes)
    probs[3] = 1.0
    shown = types.SimpleNamespace(classes=model.class_names, probs=probs.numpy(), top=model.class_names[3])
    ctx = types.SimpleNamespace(model_for_event=lambda key: model, registry=types.SimpleNamespace(default_key="m"))
    asked = []

    class Stop(Exception):
        pass

    def fake_explain(m, v, **kwargs):
        asked.append(kwargs["class_index"])
        raise Stop

    monkeypatch.setattr(ui_explain, "_explain_on_device", fake_explain)
    for choice, record_key, expected in [(ui_explain.PREDICTED, "m", model.class_names[3]),
                                         (None, "m", model.class_names[3]),
                                         (model.class_names[5], "m", model.class_names[5]),
                                         (ui_explain.PREDICTED, "other", None)]:
        with pytest.raises(Stop):
            ui_explain.explain_expression(ctx, "m", ClipRecord("clip.mp4", record_key, ingest, shown), choice)
        assert asked[-1] == expected
