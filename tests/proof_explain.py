"""The explanation proof's model and measures, shared by tests/test_explain.py (one seed) and
benchmarks/bench_proofs.py (every seed under every CPU kernel set).

A tiny DFER-CLIP (8-pixel patches, CLIP input normalisation) is trained from random weights on synthetic faces
whose classes differ by which part moves; :func:`figures` measures on held-out clips where its explanations
point, for the trained model and for the same model with every weight tensor's values shuffled.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from dferclip.explain import explain_clip
from dferclip.models import build_model
from dferclip.text.descriptions import DescriptionSet
from dferclip.training.data import frames_to_tensor
from dferclip.training.synthetic import Expression, generate_clip_with_intensity, part_boxes
from dferclip.training.train import load_train_config, model_config

# classes that differ by one part each (onset-apex-offset dynamics), drawn by dferclip.training.synthetic
PART_CLASSES = {
    "neutral": Expression(dynamics="idle"),
    "smile": Expression(smile=1.0),
    "frown": Expression(smile=-0.9),
    "mouth open": Expression(mouth_open=1.0),
    "brows raised": Expression(brow_raise=1.5),
}
MOUTH_CLASSES = ("smile", "frown", "mouth open")
BROW_CLASSES = ("brows raised",)
# not trained: clips on which the brows and the mouth move together, for the text-direction check
BOTH_MOVE = {"brows raised, smile": ("smile", Expression(smile=1.0, brow_raise=1.5)),
             "brows raised, frown": ("frown", Expression(smile=-0.9, brow_raise=1.5)),
             "brows raised, mouth open": ("mouth open", Expression(mouth_open=1.0, brow_raise=1.5))}
NAMES = list(PART_CLASSES)
FRAMES, SIZE = 8, 64
TRAIN_PER_CLASS, TEST_PER_CLASS, BOTH_PER_CLASS, EPOCHS = 24, 10, 4, 60
TEST_SEED, BOTH_SEED = 2, 3  # held-out clips: the same for every training seed
PAD = 4  # half a patch: the maps are bilinear upsamplings of an 8x8 grid of 8-pixel patches


def clips(model, per_class: int, seed, expressions=PART_CLASSES):
    xs, ys, curves = [], [], []
    names = list(expressions)
    for c, name in enumerate(names):
        for i in range(per_class):
            frames, curve = generate_clip_with_intensity(name, np.random.default_rng([*np.atleast_1d(seed), c, i]),
                                                         FRAMES, SIZE, classes=names, variation=0.0,
                                                         expressions=expressions)
            xs.append(model.input_config.normalize(frames_to_tensor(frames)))
            ys.append(c)
            curves.append(curve)
    return torch.stack(xs), torch.tensor(ys), np.stack(curves)


def train(seed: int = 0):
    """(model, held-out clips, held-out recall per class). ``seed`` draws the initial weights, the training
    clips, the batch order and the flips."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster than two fighting over a busy machine
    try:
        torch.manual_seed(seed)
        ds = DescriptionSet(classes=NAMES, descriptions=[[f"a face with {n}"] for n in NAMES], name="parts",
                            class_set="custom")
        cfg = load_train_config("synthetic-tiny").with_overrides([f"num_frames={FRAMES}"])
        model = build_model(model_config(cfg), ds)
        x, y, _ = clips(model, TRAIN_PER_CLASS, seed=(1000, seed))
        params = [p for group in model.param_groups().values() for p in group]
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        g = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(EPOCHS):
            for batch in torch.randperm(len(x), generator=g).split(16):
                flip = (torch.rand(len(batch), generator=g) < 0.5)[:, None, None, None, None]
                xb = torch.where(flip, x[batch].flip(-1), x[batch])  # the faces are symmetric
                loss = F.cross_entropy(model(xb), y[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        test = clips(model, TEST_PER_CLASS, seed=TEST_SEED)
        with torch.no_grad():
            hits = model(test[0]).argmax(-1) == test[1]
    finally:
        torch.set_num_threads(threads)
    recall = {n: float(hits[test[1] == c].float().mean()) for c, n in enumerate(NAMES)}
    return model, test, recall


def shuffle_weights(model, seed: int = 5):
    """The same model with every weight tensor's values permuted (the sanity check of Adebayo et al. 2018)."""
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.flatten()[torch.randperm(p.numel(), generator=g)].view_as(p))
    return model


def mass_ratio(m: np.ndarray, box) -> float:
    """Relevancy mass inside ``box`` (grown by half a patch) over that box's share of the crop (1: no preference)."""
    x0, y0, x1, y1 = max(box[0] - PAD, 0), max(box[1] - PAD, 0), box[2] + PAD, box[3] + PAD
    share = (x1 - x0) * (y1 - y0) / (m.shape[-1] * m.shape[-2])
    return float(m[..., y0:y1, x0:x1].sum() / m.sum() / share)


def part_ratios(model, test, classes, part) -> np.ndarray:
    """Per held-out clip of ``classes``: mass ratio of the class's map in ``part``'s box."""
    x, y, _ = test
    box = part_boxes(SIZE)[part]
    out = []
    for name in classes:
        c = NAMES.index(name)
        for i in (y == c).nonzero()[:, 0].tolist():
            out.append(mass_ratio(explain_clip(model, x[i : i + 1], class_index=c, occlusion=False).maps["video"], box))
    return np.array(out)


def apex_intensity(model, test) -> tuple[float, float]:
    """Mean expression intensity of the frame with the highest relevancy over every expressive held-out clip,
    and the mean intensity of those clips' frames."""
    x, y, curves = test
    found = []
    expressive = (y != NAMES.index("neutral")).nonzero()[:, 0].tolist()
    for i in expressive:
        ex = explain_clip(model, x[i : i + 1], class_index=int(y[i]), occlusion=False)
        found.append(curves[i][int(np.argmax(ex.frame_relevancy))])
    return float(np.mean(found)), float(curves[expressive].mean())


def text_gains(model) -> tuple[float, float]:
    """On clips where the brows and a mouth part move together, how much more of its map the brow class's
    descriptor puts on the brows than the mouth class's descriptor does, and how much less on the mouth
    (geometric means over clips of the mass ratios; 1: the text changes nothing there)."""
    boxes, brow_gain, mouth_gain = part_boxes(SIZE), [], []
    x, y, _ = clips(model, BOTH_PER_CLASS, seed=BOTH_SEED, expressions={k: v[1] for k, v in BOTH_MOVE.items()})
    for i in range(len(x)):
        mouth_class = list(BOTH_MOVE.values())[int(y[i])][0]
        m = explain_clip(model, x[i : i + 1], text=f"a face with {mouth_class}", class_index=mouth_class,
                         occlusion=False).maps["video"]
        b = explain_clip(model, x[i : i + 1], text="a face with brows raised", class_index="brows raised",
                         occlusion=False).maps["video"]
        assert not np.allclose(m, b, atol=1e-3), "the map does not depend on the text"
        brow_gain.append(mass_ratio(b, boxes["brows"]) / mass_ratio(m, boxes["brows"]))
        mouth_gain.append(mass_ratio(m, boxes["mouth"]) / mass_ratio(b, boxes["mouth"]))
    return float(np.exp(np.log(brow_gain).mean())), float(np.exp(np.log(mouth_gain).mean()))


def occlusion_agreement(model, test) -> float:
    """Mean over expressive clips of the correlation between the frame relevancy and the occlusion drop."""
    x, y, _ = test
    corr = []
    for i in (y != NAMES.index("neutral")).nonzero()[:, 0].tolist():
        ex = explain_clip(model, x[i : i + 1], class_index=int(y[i]))
        corr.append(np.corrcoef(ex.frame_relevancy, ex.frame_occlusion)[0, 1])
    return float(np.nanmean(corr))


def model_figures(model, test) -> dict:
    mouth = part_ratios(model, test, MOUTH_CLASSES, "mouth")
    brows = part_ratios(model, test, BROW_CLASSES, "brows")
    at_peak, clip_mean = apex_intensity(model, test)
    text_brows, text_mouth = text_gains(model)
    return {"mouth_mean": float(mouth.mean()), "mouth_above_1.5": float(np.mean(mouth > 1.5)),
            "mouth_min": float(mouth.min()),
            "brow_mean": float(brows.mean()), "brow_above_1": float(np.mean(brows > 1.0)), "brow_min": float(brows.min()),
            "apex_intensity": at_peak, "apex_over_mean": at_peak - clip_mean,
            "text_brows": text_brows, "text_mouth": text_mouth,
            "occlusion_agreement": occlusion_agreement(model, test)}


def figures(seed: int = 0) -> dict:
    """Every figure the explanation proof checks, for the trained model and for its shuffled twin."""
    model, test, recall = train(seed)
    return {"recall_min": min(recall.values()), "recall": recall, "trained": model_figures(model, test),
            "shuffled": model_figures(shuffle_weights(model), test)}


# (figure, ">=" or "<=", bound): what tests/test_explain.py asserts, and its shuffled twin must miss. Each holds at
# every seed under every kernel set (BENCHMARKS.md, "Learned-behaviour proofs").
BOUNDS = [
    ("recall_min", ">=", 0.6),  # every class told apart on held-out clips: no map explains an unlearned class
    ("trained/apex_over_mean", ">=", 0.25),
    ("trained/text_mouth", ">=", 1.5),
    ("trained/occlusion_agreement", ">=", 0.25),
]
# Measured by benchmarks/bench_proofs.py, not asserted (docs/explain.md): the earlier proof's region claims, which
# fail for some trained models under every kernel set (seed 1: the class token reads the brow evidence from a token
# at the mouth that gathered it in the first block, and the rollout credits that relay).
REPORTED = [
    ("trained/mouth_mean", ">=", 2.5), ("trained/mouth_above_1.5", ">=", 0.8),
    ("trained/brow_mean", ">=", 1.5), ("trained/brow_above_1", ">=", 0.8),
    ("trained/apex_intensity", ">=", 0.75),
    ("trained/text_brows", ">=", 1.5),
]
