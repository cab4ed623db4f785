"""The description workbench with FineCLIPER: positive and negative descriptor scores in the scorer, the
engine and the tab's event functions (tiny random towers, CPU)."""
import re
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import dferclip
from dferclip.metrics import compute_metrics
from dferclip.models.fineclipper import fineclipper_config
from dferclip.scoring import (
    COMBINE_MODES,
    Scorer,
    TextEmbeddingCache,
    has_pn_descriptors,
)
from dferclip.workbench import EmbeddedSet, Workbench, descriptions_to_rows

ANGER = 3
NEW_ANGER = "deeply furrowed brows and a clenched jaw."


def build(**settings):
    """A base-variant (video + PN labels) tiny FineCLIPER with non-zero adapters, so that the positive and the
    negative adapters compute different things."""
    torch.manual_seed(0)
    model = dferclip.build_model(fineclipper_config("base", base="fineclipper-tiny", **settings)).eval()
    with torch.no_grad():
        for group in model.param_groups().values():
            for p in group:
                p.add_(torch.randn_like(p) * 0.05)
    return model


def same_weights(model, **settings):
    """Another FineCLIPER with ``settings`` and ``model``'s weights."""
    other = dferclip.build_model(fineclipper_config("base", base="fineclipper-tiny", **settings)).eval()
    other.load_state_dict(model.state_dict())
    return other


def clips(model, n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    frames = model.input_config.num_frames
    return model.input_config.normalize(torch.rand(n, frames, 3, 64, 64, generator=g))


def embed(model, videos):
    with torch.no_grad():
        return F.normalize(model.encode_video(videos), dim=-1)


def two_per_class(ds):
    return ds.with_descriptions([d + [f"a face with cue number {i}"] for i, d in enumerate(ds.descriptions)])


def edited(ds, cls, text):
    descs = [list(d) for d in ds.descriptions]
    descs[cls][0] = text
    return ds.with_descriptions(descs)


def per_descriptor(model, ds, negative):
    with torch.no_grad():
        return [F.normalize(model.encode_prompts(d, [c] * len(d), negative=negative), dim=-1)
                for c, d in enumerate(ds.descriptions)]


@pytest.fixture(scope="module")
def model():
    return build(descriptors="descriptions")


def test_pn_logits_equal_the_model_and_the_formula(model):
    videos = clips(model)
    v = embed(model, videos)
    scorer = Scorer(model)
    assert has_pn_descriptors(model) and scorer.has_pn
    with torch.no_grad():
        own = model(videos)
    s = scorer.score(v, model.descriptions, "learned", "mean-embedding")
    torch.testing.assert_close(s.logits, own, atol=1e-4, rtol=1e-5)  # the model's own descriptions

    ds = two_per_class(model.descriptions)
    with torch.no_grad():
        classes = model.encode_classes(ds)
        expected_pos, expected_neg = model.positive_negative_scores(v, classes)
        expected = model.score(v, classes)
    s = scorer.score(v, ds, "learned", "mean-embedding")
    torch.testing.assert_close(s.logits, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(s.positive, expected_pos, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s.negative, expected_neg, atol=1e-5, rtol=1e-5)
    assert s.negative_weight == 1.0

    pos, neg = per_descriptor(model, ds, False), per_descriptor(model, ds, True)
    hand = {
        "mean-similarity": [((v @ p.t()).mean(1), (v @ n.t()).mean(1)) for p, n in zip(pos, neg)],
        "max": [((v @ p.t()).max(1).values, (v @ n.t()).max(1).values) for p, n in zip(pos, neg)],
    }
    for combine, per_class in hand.items():
        s = scorer.score(v, ds, "learned", combine)
        p = torch.stack([a for a, _ in per_class], 1)
        n = torch.stack([b for _, b in per_class], 1)
        torch.testing.assert_close(s.positive, p, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s.negative, n, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s.logits, 100 * (p - n), atol=1e-4, rtol=1e-5)


def test_label_descriptor_model_scores_descriptions_through_the_positive_adapter():
    label = build()  # the default: the model's own positives are the class labels
    assert label.settings.descriptors == "label" and label.descriptor_templates[0] == "{description}"
    videos = clips(label)
    v = embed(label, videos)
    s = Scorer(label).score(v, label.descriptions, "learned")
    described = same_weights(label, descriptors="descriptions")
    with torch.no_grad():
        expected = described(videos)
        own = label(videos)
    torch.testing.assert_close(s.logits, expected, atol=1e-4, rtol=1e-5)
    assert (s.logits - own).abs().max() > 1e-2  # the label prompts are not what the workbench scores
    # by hand: the description itself through the positive adapters, "... of no {name}" through the negative
    with torch.no_grad():
        pos = F.normalize(label._encode_text([("pos", [label.descriptions.descriptions[0][0]])])[0], dim=-1)
        neg = F.normalize(label._encode_text([("neg", ["A person with an expression of no happiness"])])[0], dim=-1)
    torch.testing.assert_close(s.logits[:, 0], 100 * (v @ pos.t() - v @ neg.t())[:, 0], atol=1e-4, rtol=1e-5)


def test_an_edit_reencodes_only_that_description(model):
    v = embed(model, clips(model))
    cache = TextEmbeddingCache()
    scorer = Scorer(model, cache)
    calls = []
    encode = model.encode_prompts

    def recording(texts, class_index, negative=False):
        calls.append((negative, list(zip(class_index, texts))))
        return encode(texts, class_index, negative=negative)

    model.encode_prompts = recording
    try:
        ds = two_per_class(model.descriptions)
        scorer.score(v, ds, "learned")
        # 14 positives; the 2 negatives of a class read the same ("... of no anger"): 7 negatives
        assert cache.encoded == 14 + 7
        assert sum(len(c) for neg, c in calls if neg) == 7
        calls.clear()
        for combine in COMBINE_MODES:
            scorer.score(v, ds, "learned", combine)
        assert cache.encoded == 21 and calls == []

        new = edited(ds, ANGER, NEW_ANGER)
        after = scorer.score(v, new, "learned")
        assert cache.encoded == 22 and calls == [(False, [(ANGER, NEW_ANGER)])]
        fresh = Scorer(model).score(v, new, "learned")
        torch.testing.assert_close(after.logits, fresh.logits)
    finally:
        del model.encode_prompts

    # a negative template that uses the description: an edit re-encodes its positive and its negative
    own_negative = same_weights(model, descriptors="descriptions",
                                description_templates=["{description}", "A face without {description}"])
    cache = TextEmbeddingCache()
    scorer = Scorer(own_negative, cache)
    scorer.score(v, ds, "learned")
    assert cache.encoded == 14 + 14
    s = scorer.score(v, new, "learned")
    assert cache.encoded == 28 + 2
    with torch.no_grad():
        expected = own_negative.score(v, own_negative.encode_classes(new))
    torch.testing.assert_close(s.logits, expected, atol=1e-4, rtol=1e-5)


def test_contributions_add_up_to_the_logits(model):
    v = embed(model, clips(model))
    ds = two_per_class(model.descriptions)
    for combine in COMBINE_MODES:
        s = Scorer(model).score(v, ds, "learned", combine)
        summed = torch.stack([c.sum(1) for c in s.contributions], 1) + s.negative_contributions
        torch.testing.assert_close(summed, s.logits, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(s.negative_contributions, -100 * s.negative, atol=1e-5, rtol=1e-5)
        # the descriptors' similarities are the positive ones: 100 cos(v, positive descriptor)
        pos = per_descriptor(model, ds, False)
        torch.testing.assert_close(s.similarities[2], 100 * v @ pos[2].t(), atol=1e-4, rtol=1e-5)


def test_negative_weight_scales_the_negative_term(model):
    v = embed(model, clips(model))
    scorer = Scorer(model)
    base = scorer.score(v, model.descriptions, "learned")
    try:
        model.negative_weight = 0.0
        none = scorer.score(v, model.descriptions, "learned")
        model.negative_weight = 2.0
        double = scorer.score(v, model.descriptions, "learned")
    finally:
        model.negative_weight = 1.0
    torch.testing.assert_close(none.positive, base.positive)
    torch.testing.assert_close(double.negative, base.negative)
    torch.testing.assert_close(none.logits, 100 * base.positive)
    torch.testing.assert_close(double.logits - base.logits, -100 * base.negative, atol=1e-4, rtol=1e-5)
    assert (none.negative_contributions == 0).all() and double.negative_weight == 2.0
    # the setting in the config, through the model
    half = same_weights(model, descriptors="descriptions", negative_weight=0.5)
    s = Scorer(half).score(v, model.descriptions, "learned")
    assert s.negative_weight == 0.5
    with torch.no_grad():
        torch.testing.assert_close(s.logits, half.score(v, half.encode_classes()), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(s.logits, 100 * (base.positive - 0.5 * base.negative), atol=1e-4, rtol=1e-5)


def test_zero_shot_mode_stays_plain_clip(model):
    videos = clips(model)
    with torch.no_grad():
        zs = model.zero_shot_video(videos)
        expected = model.score(zs, model.zero_shot_classes())
    s = Scorer(model).score(zs, model.descriptions, "zero-shot")
    torch.testing.assert_close(s.logits, expected, atol=1e-4, rtol=1e-5)
    assert s.positive is None and s.negative is None and s.negative_contributions is None


def test_workbench_reports_pn_cosines_for_three_versions(model):
    wb = Workbench(model)
    assert wb.has_pn and wb.reserved_tokens() == 0  # the description is the whole positive descriptor
    videos = clips(model, n=2)
    names = [wb.add_clip(v[None]) for v in videos]
    rows = descriptions_to_rows(wb.current)
    rows[ANGER][1] = NEW_ANGER
    wb.edit_rows(rows)
    rows[0][1] = "a broad grin with visible teeth."
    wb.edit_rows(rows)
    out = wb.score_clips()["clips"][names[1]]
    assert out["zero-shot"]["pn"] is None and out["zero-shot"]["negative_terms"] == []
    learned = out["learned"]
    pn = learned["pn"]
    assert pn["negative_weight"] == 1.0

    v = embed(model, videos[1:])
    scorer = Scorer(model)
    for which, ds in (("current", wb.current), ("previous", wb.previous), ("baseline", wb.baseline)):
        s = scorer.score(v, ds, "learned")
        assert pn[which]["positive"] == pytest.approx(s.positive[0].tolist(), abs=1e-6)
        assert pn[which]["negative"] == pytest.approx(s.negative[0].tolist(), abs=1e-6)
    changed = [c for c in range(7) if pn["current"]["positive"][c] != pn["baseline"]["positive"][c]]
    assert changed == [0, ANGER]
    assert [c for c in range(7) if pn["current"]["positive"][c] != pn["previous"]["positive"][c]] == [0]
    assert pn["current"]["negative"] == pn["baseline"]["negative"]  # the class negatives did not change

    terms = learned["negative_terms"]
    assert [t["class"] for t in terms] == model.class_names
    assert terms[ANGER]["texts"] == ["A person with an expression of no anger"]
    for c, cls in enumerate(model.class_names):
        total = sum(d["contribution"] for d in learned["descriptors"] if d["class"] == cls) + terms[c]["contribution"]
        assert total == pytest.approx(learned["logits"][c], abs=1e-4)
        assert terms[c]["contribution"] == pytest.approx(-100 * pn["current"]["negative"][c], abs=1e-4)
    with torch.no_grad():
        probs = model.score(v, model.encode_classes(wb.current)).softmax(-1)[0] * 100
    assert learned["probs"] == pytest.approx(probs.tolist(), abs=1e-3)


def test_workbench_evaluates_a_fineclipper_model(model):
    """Clip embeddings set to (normalised) positive class embeddings; predictions follow the PN logits."""
    wb = Workbench(model)
    videos = clips(model, n=4)
    with torch.no_grad():
        learned = embed(model, videos)
        zero = model.zero_shot_video(videos)
    labels = [0, 1, 2, 3]
    wb.set_evaluation_embeddings(EmbeddedSet([f"c{i}" for i in range(4)], torch.tensor(labels), learned, zero))
    wb.edit(edited(wb.current, ANGER, NEW_ANGER))
    ev = wb.evaluate()["modes"]["learned"]
    with torch.no_grad():
        for which in ("current", "baseline"):
            preds = model.score(learned, model.encode_classes(getattr(wb, which))).argmax(-1).tolist()
            assert ev[which].war == pytest.approx(compute_metrics(labels, preds, 7).war)
            assert ev[which].confusion.tolist() == compute_metrics(labels, preds, 7).confusion.tolist()


def test_dferclip_models_have_no_pn_scores(tiny_model):
    assert not has_pn_descriptors(tiny_model)
    wb = Workbench(tiny_model)
    assert wb.reserved_tokens() == tiny_model.config.prompt.n_ctx
    torch.manual_seed(3)
    name = wb.add_clip(torch.rand(1, 16, 3, 64, 64))
    out = wb.score_clips()["clips"][name]["learned"]
    assert out["pn"] is None and out["negative_terms"] == []
    s = Scorer(tiny_model).score(wb.clips[name].learned, wb.current, "learned")
    assert s.positive is None and s.negative_contributions is None


# --- the tab's event functions --------------------------------------------------------------------
FINE = "random:fineclipper-tiny"
DFER = "random:dferclip-tiny"


@pytest.fixture(scope="module")
def ctx():
    from dferclip.runtime import ModelEntry, ModelRegistry
    from dferclip.ui.context import AppContext

    return AppContext(ModelRegistry([ModelEntry(FINE, "fineclipper", "explicit"),
                                     ModelEntry(DFER, "dferclip", "default")], dev="cpu"))


def page_clip(key, frames):
    from dferclip.ui.context import ClipRecord

    torch.manual_seed(4)
    return ClipRecord(path="clip.webm", model_key=key, ingest=SimpleNamespace(video=torch.rand(1, frames, 3, 64, 64)),
                      prediction=None)


OUTPUTS = ["table", "only", "state", "status", "flags", "zero", "learned", "pn", "note", "scores", "contributions",
           "metrics", "recall", "confusion"]


def pn_bars(html: str) -> pd.DataFrame:
    """The PN chart's bars as the page gets them (each bar's class, series and value attributes)."""
    rows = re.findall(r'data-group="([^"]*)" data-series="([^"]*)" data-value="([^"]*)"', html)
    return pd.DataFrame({"bar": [f"{g} · {s[:3]}" for g, s, _ in rows], "cosine": [float(v) for _, _, v in rows],
                         "descriptor": [s for _, s, _ in rows]})


def start(ctx, key, clip):
    from dferclip.ui.workbench import start_event

    return dict(zip(OUTPUTS, start_event(ctx, key, "DFEW", "", None, "mean-embedding", clip, None)))


def test_tab_shows_pn_bars_and_negative_rows_for_fineclipper(ctx):
    from dferclip.ui.workbench import MODE_LABELS, PN_LEARNED_LABEL, rescore_event

    clip = page_clip(FINE, 8)
    out = start(ctx, FINE, clip)
    model = ctx.model(FINE)
    assert out["pn"].visible is True and out["note"].visible is True
    assert PN_LEARNED_LABEL in out["learned"].value and MODE_LABELS["learned"] not in out["learned"].value
    bars = pn_bars(out["pn"].value)
    assert list(bars["descriptor"]) == ["positive", "negative"] * 7
    assert list(bars["bar"][:2]) == ["happiness · pos", "happiness · neg"]

    wb = Workbench(model)
    name = wb.add_clip(clip.video)
    s = wb.scorer.score(wb.clips[name].learned, wb.current, "learned")
    assert list(bars["cosine"][0::2]) == pytest.approx(s.positive[0].tolist(), abs=1e-5)
    assert list(bars["cosine"][1::2]) == pytest.approx(s.negative[0].tolist(), abs=1e-5)

    note = out["note"].value
    assert "100·(cos⁺ − λ·cos⁻) with λ = 1" in note and "A person with an expression of no {name}" in note
    assert "description alternative" in note  # the model's own positives are labels

    contrib = out["contributions"]
    learned = contrib[contrib["mode"] == "learned"]
    negative = learned[learned["description"].str.startswith("negative: ")]
    assert list(negative["class"]) == model.class_names
    assert negative["description"].iloc[ANGER] == "negative: A person with an expression of no anger"
    logits = out["scores"]["learned logit"].astype(float)
    assert learned.groupby("class", sort=False)["contribution"].sum().tolist() == pytest.approx(logits.tolist(),
                                                                                               abs=5e-3)
    assert list(out["scores"]["learned cos⁻"].astype(float)) == pytest.approx(s.negative[0].tolist(), abs=1e-4)

    table = out["table"].copy()
    table.iloc[ANGER, 1] = NEW_ANGER
    again = dict(zip(OUTPUTS[2:], rescore_event(ctx, FINE, table, out["state"], "mean-embedding", clip, None)))
    after = pn_bars(again["pn"].value)
    moved = [b for b, x, y in zip(bars["bar"], bars["cosine"], after["cosine"]) if x != y]
    assert moved == ["anger · pos"]
    # one positive descriptor and the zero-shot templates of the edited description; no negative
    encoded = 1 + len(model.config.zero_shot_templates)
    assert f"differs from baseline in: anger · clip: clip.webm · {encoded} text encoding(s)" in again["status"]


def test_tab_hides_pn_bars_for_dferclip(ctx):
    from dferclip.ui.workbench import MODE_LABELS

    out = start(ctx, DFER, page_clip(DFER, 16))
    assert out["pn"].visible is False and out["note"].visible is False and out["note"].value == ""
    assert MODE_LABELS["learned"] in out["learned"].value
    assert not out["contributions"]["description"].str.startswith("negative: ").any()
    assert not any("cos" in c for c in out["scores"].columns)
    assert len(out["contributions"]) == 14  # 7 descriptors, zero-shot and learned


def test_tab_hides_pn_bars_without_learned_scores(ctx):
    """Custom classes: zero-shot only, so no PN bars; the note still says how the model scores."""
    from dferclip.ui.workbench import start_event

    out = dict(zip(OUTPUTS, start_event(ctx, FINE, "custom", "calm, excited", None, "max", page_clip(FINE, 8),
                                        None)))
    assert out["pn"].visible is False and out["note"].visible is True
    assert set(out["contributions"]["mode"]) == {"zero-shot"}
