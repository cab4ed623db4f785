"""Comparing two description sets honestly: the exact McNemar test against a hand computation, paired
stratified-bootstrap intervals that cover the true difference at about their stated rate, and
``describe compare`` on real clips, agreeing with ``describe evaluate``."""
import json
from math import comb

import numpy as np
import pytest

from dferclip.cli import main as cli_main
from dferclip.metrics import compare_predictions, compute_metrics, mcnemar_exact, stratified_bootstrap


def test_mcnemar_exact_matches_a_hand_computed_p_value():
    # 10 clips right only under A, 2 only under B, 5 right under both: p = 2 P(X <= 2), X ~ Bin(12, 1/2)
    a = [1] * 10 + [0] * 2 + [1] * 5
    b = [0] * 10 + [1] * 2 + [1] * 5
    hand = 2 * sum(comb(12, k) for k in range(3)) / 2**12  # 158 / 4096
    result = mcnemar_exact(a, b)
    assert (result.a_only, result.b_only) == (10, 2) and result.p == pytest.approx(hand, rel=1e-12)
    assert mcnemar_exact(b, a).p == pytest.approx(hand, rel=1e-12)  # symmetric
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]).p == 1.0  # nothing changed: no evidence
    assert mcnemar_exact([1] * 6, [0] * 6).p == pytest.approx(2 / 2**6)


def test_bootstrap_keeps_every_class_and_its_count():
    y = [0, 0, 0, 1, 2, 2]  # class 1 has one clip: every resample still has it
    always, never = [True] * 6, [False] * 6
    boot = stratified_bootstrap(y, {"right": always, "wrong": never, "half": [1, 0, 1, 1, 0, 0]}, 4,
                                resamples=500, seed=3)
    assert (boot["right"]["uar"] == 100).all() and (boot["wrong"]["war"] == 0).all()
    # "half" is right on the class-1 clip in every resample, so its UAR never falls below 1/3 * 100
    assert boot["half"]["uar"].min() >= 100 / 3 - 1e-9
    again = stratified_bootstrap(y, {"half": [1, 0, 1, 1, 0, 0]}, 4, resamples=500, seed=3)
    np.testing.assert_array_equal(again["half"]["uar"], boot["half"]["uar"])  # seeded


def _population_draw(rng, per_class: int, acc_a, acc_b):
    """Labels (per_class clips of each class) and predictions of A and B, right with the class's probability;
    the two are paired (one uniform draw per clip decides both), as two description sets on one model are."""
    classes = len(acc_a)
    y = np.repeat(np.arange(classes), per_class)
    u = rng.random(len(y))
    a = np.where(u < np.asarray(acc_a)[y], y, (y + 1) % classes)
    b = np.where(u < np.asarray(acc_b)[y], y, (y + 1) % classes)
    return y, a, b


def test_intervals_cover_the_true_difference_at_about_the_stated_rate():
    acc_a, acc_b = [0.5, 0.3, 0.7, 0.4], [0.6, 0.35, 0.7, 0.55]
    true_uar = 100 * (np.mean(acc_b) - np.mean(acc_a))  # classes equally many: WAR's true difference too
    rng = np.random.default_rng(2024)
    runs, covered_uar, covered_war, significant = 300, 0, 0, 0
    for k in range(runs):
        y, a, b = _population_draw(rng, 30, acc_a, acc_b)
        c = compare_predictions(y, a, b, 4, resamples=1000, seed=k)
        covered_uar += c.uar_diff.low <= true_uar <= c.uar_diff.high
        covered_war += c.war_diff.low <= true_uar <= c.war_diff.high
        significant += c.mcnemar.p < 0.05
    # 95 % intervals: a percentile bootstrap on 120 clips runs a little narrow; the binomial spread of 300
    # runs is about +-2.5 points
    assert 0.89 <= covered_uar / runs <= 0.99 and 0.89 <= covered_war / runs <= 0.99
    assert significant / runs > 0.5  # a 7.5-point paired gain on 120 clips is found most of the time


def test_a_comparison_of_a_set_with_itself_is_no_difference():
    rng = np.random.default_rng(0)
    y, a, _ = _population_draw(rng, 10, [0.5] * 3, [0.5] * 3)
    c = compare_predictions(y, a, a, 3, resamples=200)
    assert c.uar_diff.low == c.uar_diff.high == 0 and c.mcnemar.p == 1.0 and c.flipped == []
    m = compute_metrics(y, a, 3)
    assert (c.a.uar, c.a.war) == (m.uar, m.war) and c.uar_a.low <= m.uar <= c.uar_a.high


# --- describe compare on real clips ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    from media import face_clip

    folder = tmp_path_factory.mktemp("clips")
    labels = ["anger", "fear", "happiness", "sadness", "anger", "neutral"]
    rows = []
    for i, label in enumerate(labels):
        face_clip(folder / f"clip{i}.mp4", num_frames=18 + 2 * i, width=320, height=240, face_scale=0.8)
        rows.append(f"clip{i}.mp4,{label}")
    (folder / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return folder / "labels.csv"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import dferclip
    import torch

    torch.manual_seed(0)
    return str(dferclip.save_model(dferclip.load_model("random:dferclip-tiny"), tmp_path_factory.mktemp("m") / "m"))


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory, tiny_model_dir):
    import dferclip

    folder = tmp_path_factory.mktemp("sets")
    a = dferclip.load_model(tiny_model_dir).descriptions
    edited = [list(d) for d in a.descriptions]
    edited[0] = ["a broad grin with raised cheeks and crinkled eyes"]
    edited[3] = ["lips pressed tight, eyebrows drawn down and together"]
    b = a.with_descriptions(edited, name="edited")
    pa, pb = folder / "a.json", folder / "b.json"
    pa.write_text(json.dumps(a.to_dict()))
    pb.write_text(json.dumps(b.to_dict()))
    return pa, pb


def test_describe_compare_prints_both_sets_the_difference_and_the_flips(labelled, two_sets, tiny_model_dir,
                                                                          tmp_path, capsys):
    pa, pb = two_sets
    common = ["--eval", str(labelled), "--model", tiny_model_dir, "--cache-dir", str(tmp_path / "cache")]
    assert cli_main(["describe", "compare", str(pa), str(pb), *common, "--json", "--resamples", "500"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 6 and set(out["modes"]) == {"zero-shot", "learned"}
    for mode, r in out["modes"].items():
        assert r["uar_diff"]["estimate"] == pytest.approx(r["b"]["uar"] - r["a"]["uar"])
        assert r["uar_diff"]["low"] <= r["uar_diff"]["estimate"] <= r["uar_diff"]["high"]
        assert 0 <= r["mcnemar"]["p"] <= 1 and r["resamples"] == 500
        assert all({"path", "label", "a", "b"} <= set(f) and f["a"] != f["b"] for f in r["flipped"])
        assert len(r["flipped"]) >= r["mcnemar"]["a_only"] + r["mcnemar"]["b_only"]
        assert r["small_classes"] == ["happiness", "sadness", "neutral", "anger", "fear"]
    # each set's own figures are what describe evaluate says of it
    assert cli_main(["describe", "evaluate", "--checkpoint", tiny_model_dir, "--set", str(pa), "--set", str(pb),
                     "--labels", str(labelled), "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    (name_a, ev_a), (name_b, ev_b) = alone.items()
    for mode in out["modes"]:
        assert out["modes"][mode]["a"]["uar"] == pytest.approx(ev_a[mode]["uar"])
        assert out["modes"][mode]["b"]["war"] == pytest.approx(ev_b[mode]["war"])
    assert cli_main(["describe", "compare", str(pa), str(pb), *common]) == 0
    text = capsys.readouterr().out
    assert "== zero-shot" in text and "B - A" in text and "McNemar (exact)" in text and "95 % paired bootstrap" in text
    assert "change prediction" in text
    assert "fewer than 5 clips in happiness, sadness, neutral, anger, fear" in text  # 1-2 clips each: said


def test_the_app_s_verdict_never_calls_a_difference_real_on_too_few_clips():
    from dferclip.ui.compare import _verdict

    rng = np.random.default_rng(5)
    y, a, b = _population_draw(rng, 40, [0.3, 0.3, 0.3], [0.8, 0.8, 0.8])
    assert _verdict(compare_predictions(y, a, b, 3, resamples=500)) == "B's UAR is higher beyond the noise of these clips"
    y, a, b = _population_draw(rng, 40, [0.5] * 3, [0.5] * 3)
    assert _verdict(compare_predictions(y, a, b, 3, resamples=500)).startswith("the difference could be noise")
    # one clip per class: intervals collapse to a point, which must not read as certainty
    few = compare_predictions([0, 1, 2], [1, 2, 0], [0, 1, 2], 3, resamples=500)
    assert few.uar_diff.low == few.uar_diff.high == 100 and few.small_classes == [0, 1, 2]
    assert _verdict(few) == "too few clips in some classes to tell a difference from noise"
