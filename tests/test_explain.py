"""Explanations (dferclip.explain): the explained logit is the model's own, maps and frame measures have the
right form for both families, the CLI and the app's endpoints deliver them, and, on a tiny model trained here on
synthetic faces whose classes differ by which part moves, the maps point at that part, a brow text and a mouth
text point at their own parts on one clip, and the frame relevancy at the apex (agreeing with the occlusion
check), while the same checks fail once the model's weights are shuffled.

What is explained is the default: the class's logit minus the neutral class's ("why this expression rather
than a neutral face"). Margins (held-out clips; the same bound must fail with shuffled weights; boxes grown by
half a patch), measured on a 2-core CPU:
- mouth classes: relevancy mass in the mouth box >= 2.5x the box's share of the crop on average and > 1.5x on
  80 % of clips (measured: trained x3.4, min x1.4, 93 % above 1.5; shuffled x1.0);
- the brow class: mass in the brow box >= 1.5x its share on average and > 1x on 80 % of clips (trained x2.4, min
  x1.2; shuffled x0.9);
- on clips where the brows and the mouth both move, the brow class's descriptor puts more on the brows and less
  on the mouth than the mouth class's descriptor: geometric-mean gains >= 1.5 (trained x2.9 brows, x2.3 mouth;
  shuffled x1.1 and x1.0);
- the frame with the highest relevancy has a mean expression intensity >= 0.75 and >= the clips' mean + 0.25
  (the apex is 1; trained 0.84, shuffled 0.63, clip mean 0.40);
- the occlusion drop agrees with the frame relevancy: mean per-clip correlation >= 0.25 (trained 0.45,
  shuffled 0.05).
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from app_helpers import TINY, feat_clip

import dferclip
from dferclip.explain import ExplainError, explain_clip, overlay, text_embedding
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
TRAIN_PER_CLASS, TEST_PER_CLASS, EPOCHS = 24, 5, 60
PAD = 4  # half a patch: the maps are bilinear upsamplings of an 8x8 grid of 8-pixel patches


def _clips(model, per_class: int, seed: int, expressions=PART_CLASSES):
    xs, ys, curves = [], [], []
    names = list(expressions)
    for c, name in enumerate(names):
        for i in range(per_class):
            frames, curve = generate_clip_with_intensity(name, np.random.default_rng([seed, c, i]), FRAMES, SIZE,
                                                         classes=names, variation=0.0, expressions=expressions)
            xs.append(model.input_config.normalize(frames_to_tensor(frames)))
            ys.append(c)
            curves.append(curve)
    return torch.stack(xs), torch.tensor(ys), np.stack(curves)


@pytest.fixture(scope="module")
def trained():  # about 1.5 minutes on a 2-core CPU
    """A tiny DFER-CLIP (synthetic-tiny: 8-pixel patches, CLIP input normalisation) trained on part classes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster than two fighting over a busy machine
    try:
        torch.manual_seed(0)
        ds = DescriptionSet(classes=NAMES, descriptions=[[f"a face with {n}"] for n in NAMES], name="parts",
                            class_set="custom")
        model = build_model(model_config(load_train_config("synthetic-tiny").with_overrides([f"num_frames={FRAMES}"])),
                            ds)
        x, y, _ = _clips(model, TRAIN_PER_CLASS, seed=1)
        params = [p for group in model.param_groups().values() for p in group]
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        g = torch.Generator().manual_seed(0)
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
        test = _clips(model, TEST_PER_CLASS, seed=2)
        with torch.no_grad():
            hits = model(test[0]).argmax(-1) == test[1]
        recall = {n: float(hits[test[1] == c].float().mean()) for c, n in enumerate(NAMES)}
        # every class, or a map could be explaining a class the model never told apart (brows vs neutral)
        assert min(recall.values()) >= 0.6, f"the tiny model did not learn the part classes: held-out recall {recall}"
    finally:
        torch.set_num_threads(threads)
    return model, test


@pytest.fixture(scope="module")
def shuffled(trained):
    """The same model with every weight tensor's values permuted (the sanity check of Adebayo et al. 2018)."""
    model = copy.deepcopy(trained[0])
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.flatten()[torch.randperm(p.numel(), generator=g)].view_as(p))
    return model


def _mass_ratio(m: np.ndarray, box) -> float:
    """Relevancy mass inside ``box`` (grown by half a patch) over that box's share of the crop (1: no preference)."""
    x0, y0, x1, y1 = max(box[0] - PAD, 0), max(box[1] - PAD, 0), box[2] + PAD, box[3] + PAD
    share = (x1 - x0) * (y1 - y0) / (m.shape[-1] * m.shape[-2])
    return float(m[..., y0:y1, x0:x1].sum() / m.sum() / share)


def _part_ratios(model, test, classes, part):
    x, y, _ = test
    box = part_boxes(SIZE)[part]
    out = []
    for name in classes:
        c = NAMES.index(name)
        for i in (y == c).nonzero()[:, 0].tolist():
            out.append(_mass_ratio(explain_clip(model, x[i : i + 1], class_index=c, occlusion=False).maps["video"], box))
    return np.array(out)


def _apex_intensity(model, test):
    """Mean expression intensity of the frame with the highest relevancy, over every expressive test clip."""
    x, y, curves = test
    found = []
    for i in (y != NAMES.index("neutral")).nonzero()[:, 0].tolist():  # every expressive clip
        ex = explain_clip(model, x[i : i + 1], class_index=int(y[i]), occlusion=False)
        found.append(curves[i][int(np.argmax(ex.frame_relevancy))])
    return float(np.mean(found)), float(curves[(y != 0).numpy()].mean())


def _text_gains(model) -> tuple[float, float]:
    """On clips where the brows and a mouth part move together, how much more of its map the brow class's
    descriptor puts on the brows than the mouth class's descriptor does, and how much less on the mouth
    (geometric means over clips of the mass ratios; 1: the text changes nothing there)."""
    boxes, brow_gain, mouth_gain = part_boxes(SIZE), [], []
    x, y, _ = _clips(model, 4, seed=3, expressions={k: v[1] for k, v in BOTH_MOVE.items()})
    for i in range(len(x)):
        mouth_class = list(BOTH_MOVE.values())[int(y[i])][0]
        m = explain_clip(model, x[i : i + 1], text=f"a face with {mouth_class}", class_index=mouth_class,
                         occlusion=False).maps["video"]
        b = explain_clip(model, x[i : i + 1], text="a face with brows raised", class_index="brows raised",
                         occlusion=False).maps["video"]
        assert not np.allclose(m, b, atol=1e-3), "the map does not depend on the text"
        brow_gain.append(_mass_ratio(b, boxes["brows"]) / _mass_ratio(m, boxes["brows"]))
        mouth_gain.append(_mass_ratio(m, boxes["mouth"]) / _mass_ratio(b, boxes["mouth"]))
    return float(np.exp(np.log(brow_gain).mean())), float(np.exp(np.log(mouth_gain).mean()))


def _occlusion_agreement(model, test) -> float:
    """Mean over expressive clips of the correlation between the frame relevancy and the occlusion drop."""
    x, y, _ = test
    corr = []
    for i in (y != NAMES.index("neutral")).nonzero()[:, 0].tolist():
        ex = explain_clip(model, x[i : i + 1], class_index=int(y[i]))
        corr.append(np.corrcoef(ex.frame_relevancy, ex.frame_occlusion)[0, 1])
    return float(np.nanmean(corr))


# --- the maps mean something (trained) and nothing on shuffled weights -----------------------------------
@pytest.mark.slow
def test_mouth_classes_are_explained_by_the_mouth(trained, shuffled):
    model, test = trained
    mouth = _part_ratios(model, test, MOUTH_CLASSES, "mouth")
    shuffled_mouth = _part_ratios(shuffled, test, MOUTH_CLASSES, "mouth")
    print(f"mouth mass / mouth share: trained x{mouth.mean():.2f} (min {mouth.min():.2f}), "
          f"shuffled x{shuffled_mouth.mean():.2f}")
    assert mouth.mean() >= 2.5 and np.mean(mouth > 1.5) >= 0.8, mouth
    assert not (shuffled_mouth.mean() >= 2.5 and np.mean(shuffled_mouth > 1.5) >= 0.8)  # fails when shuffled


@pytest.mark.slow
def test_brow_classes_are_explained_by_the_brows(trained, shuffled):
    model, test = trained
    brows = _part_ratios(model, test, BROW_CLASSES, "brows")
    shuffled_brows = _part_ratios(shuffled, test, BROW_CLASSES, "brows")
    print(f"brow mass / brow share: trained x{brows.mean():.2f}, shuffled x{shuffled_brows.mean():.2f}")
    assert brows.mean() >= 1.5 and np.mean(brows > 1.0) >= 0.8, brows
    assert not (shuffled_brows.mean() >= 1.5 and np.mean(shuffled_brows > 1.0) >= 0.8)


@pytest.mark.slow
def test_frame_relevancy_peaks_near_the_apex(trained, shuffled):
    model, test = trained
    at_peak, mean = _apex_intensity(model, test)
    shuffled_at_peak, _ = _apex_intensity(shuffled, test)
    print(f"intensity at the most relevant frame: trained {at_peak:.2f}, shuffled {shuffled_at_peak:.2f}, "
          f"clip mean {mean:.2f}")
    assert at_peak >= 0.75 and at_peak >= mean + 0.25
    assert not (shuffled_at_peak >= 0.75 and shuffled_at_peak >= mean + 0.25)  # the same check fails


@pytest.mark.slow
def test_maps_follow_the_text_to_its_part(trained, shuffled):
    brows, mouth = _text_gains(trained[0])
    shuffled_brows, shuffled_mouth = _text_gains(shuffled)
    print(f"brow text over mouth text on the brows, mouth text over brow text on the mouth: "
          f"trained x{brows:.2f}, x{mouth:.2f}; shuffled x{shuffled_brows:.2f}, x{shuffled_mouth:.2f}")
    assert brows >= 1.5 and mouth >= 1.5
    assert not (shuffled_brows >= 1.5 and shuffled_mouth >= 1.5)


@pytest.mark.slow
def test_occlusion_agrees_with_the_frame_relevancy(trained, shuffled):
    agreement, shuffled_agreement = _occlusion_agreement(*trained), _occlusion_agreement(shuffled, trained[1])
    print(f"correlation of occlusion drop and frame relevancy: trained {agreement:.2f}, "
          f"shuffled {shuffled_agreement:.2f}")
    assert agreement >= 0.25
    assert not shuffled_agreement >= 0.25


# --- the method's form, both families ------------------------------------------------------------------
@pytest.mark.parametrize("source", ["random:dferclip-tiny", "random:fineclipper-tiny"])
def test_explained_logit_is_the_models_own(source):
    model = dferclip.load_model(source)
    ic = model.input_config
    torch.manual_seed(0)
    video = ic.normalize(torch.rand(1, ic.num_frames, 3, ic.image_size, ic.image_size))
    inputs = video
    if model.needs_face_analysis:  # given renders: the face mesh is not what is tested here
        inputs = {"video": video, "parsing": ic.normalize(torch.rand_like(video)),
                  "landmarks": ic.normalize(torch.rand_like(video))}
    with torch.no_grad():
        logits = model(inputs)[0]
    neutral = model.class_names.index("neutral")
    others = lambda c: [k for k in range(model.num_classes) if k != c]  # noqa: E731
    for c in range(model.num_classes):
        ex = explain_clip(model, inputs, class_index=c, occlusion=c == 0)
        assert ex.logit == pytest.approx(float(logits[c]), abs=1e-5)
        # the default contrast: the neutral class, or for neutral itself the other classes' mean logit
        contrast = logits[others(c)].mean() if c == neutral else logits[neutral]
        assert ex.score == pytest.approx(float(logits[c] - contrast), abs=1e-5)
        assert ex.versus == ("the other classes" if c == neutral else 'class "neutral"')
    raw = explain_clip(model, inputs, class_index=0, versus=None, occlusion=False)
    assert raw.score == raw.logit == pytest.approx(float(logits[0]), abs=1e-5) and raw.versus is None
    against = explain_clip(model, inputs, class_index=0, versus=model.class_names[1], occlusion=False)
    assert against.score == pytest.approx(float(logits[0] - logits[1]), abs=1e-5)
    assert not np.allclose(raw.maps["video"], against.maps["video"], atol=1e-4)
    top = explain_clip(model, inputs)  # no target: the predicted class
    assert top.target == f'class "{model.class_names[int(logits.argmax())]}"'
    assert top.streams == list(model.visual_streams)
    for m in top.maps.values():
        assert m.shape == (ic.num_frames, ic.image_size, ic.image_size) and m.min() >= 0 and m.max() == 1
    assert top.frame_relevancy.shape == top.frame_occlusion.shape == (ic.num_frames,)
    assert top.frame_relevancy.sum() == pytest.approx(1, abs=1e-5)
    assert np.abs(top.frame_occlusion).max() > 0
    d = top.to_dict()
    assert np.asarray(d["maps"]["video"]).shape == (ic.num_frames, *model.clip.visual.grid_size)
    with torch.no_grad():  # hooks are idle outside explain_clip: the plain forward is unchanged
        assert torch.equal(model(inputs)[0], logits)
    # a text: as a descriptor of a class (the workbench's learned row) or plain CLIP text, or an embedding
    a = explain_clip(model, inputs, text="raised cheeks", class_index=0, occlusion=False)
    b = explain_clip(model, inputs, text="a frown", class_index=0, occlusion=False)
    assert not np.allclose(a.maps["video"], b.maps["video"], atol=1e-4)
    emb = text_embedding(model, "raised cheeks", 0)
    with torch.no_grad():
        direct = model.score(model.encode_video(inputs), emb[None])[0, 0]
    assert a.logit == pytest.approx(float(direct), abs=1e-4)
    assert a.score == pytest.approx(float(direct - logits[neutral]), abs=1e-4)
    assert explain_clip(model, inputs, text=emb, occlusion=False).score == pytest.approx(a.score, abs=1e-4)
    if len(model.visual_streams) > 1:
        assert set(top.stream_frame_relevancy) == set(model.visual_streams) and top.stream_weights["caption"] == 0


def test_bad_requests_are_typed_errors(tiny_model):
    video = torch.rand(1, 16, 3, 64, 64)
    with pytest.raises(ExplainError, match="unknown class"):
        explain_clip(tiny_model, video, class_index="joy")
    with pytest.raises(ExplainError, match="embedding size"):
        explain_clip(tiny_model, video, text=torch.zeros(5))
    with pytest.raises(ExplainError, match="one clip"):
        explain_clip(tiny_model, torch.rand(2, 16, 3, 64, 64))
    with pytest.raises(ExplainError, match="empty"):
        explain_clip(tiny_model, video, text="  ")
    with pytest.raises(ExplainError, match="itself"):
        explain_clip(tiny_model, video, class_index="anger", versus="anger")
    with pytest.raises(ExplainError, match="unknown class"):
        explain_clip(tiny_model, video, class_index="anger", versus="calm")
    with pytest.raises(ExplainError, match="RGB"):
        overlay(np.zeros((8, 8)), np.zeros((8, 8)))


def test_the_note_says_when_the_clip_speaks_against_the_target(tiny_model):
    import html

    from dferclip.ui.explain import note_for

    video = torch.rand(1, 16, 3, 64, 64)
    ex = explain_clip(tiny_model, video, class_index="anger", occlusion=False)
    note = note_for(tiny_model, ex)
    shown = html.unescape(note)  # the note is Markdown with its texts escaped
    assert 'class "anger"** versus class "neutral"' in shown and "untrained" in shown
    assert ('matches class "neutral" better' in shown) == (ex.score < 0)
    ex.frame_relevancy[:] = 0  # nothing raised the score
    assert "every frame's share is 0 %" in note_for(tiny_model, ex)


def test_overlay_colours_relevant_pixels_only():
    frame = np.full((32, 32, 3), 128, dtype=np.uint8)
    m = np.zeros((4, 4), dtype=np.float32)
    m[0, 0] = 1.0
    out = overlay(frame, m)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert (out[-4:, -4:] == 128).all() and np.abs(out[:3, :3].astype(int) - 128).max() > 40


# --- the command line and the app ------------------------------------------------------------------------
def test_explain_command_writes_png_and_npz(tmp_path, capsys):
    from PIL import Image

    from dferclip.cli import main

    clip = feat_clip("single_face.mp4")
    npz, png = tmp_path / "maps.npz", tmp_path / "maps.png"
    assert main(["explain", str(clip), "--checkpoint", TINY, "--text", "raised cheeks", "--class", "happiness",
                 "--out", str(npz)]) == 0
    out = capsys.readouterr()
    assert 'text "raised cheeks" (class happiness)' in out.out and "untrained" in out.err
    assert 'versus class "neutral"' in out.out
    data = np.load(npz)
    assert data["map_video"].shape == (16, 64, 64) and data["crops"].shape == (16, 64, 64, 3)
    assert data["frame_relevancy"].shape == (16,) and data["frame_relevancy"].sum() == pytest.approx(1, abs=1e-4)
    assert main(["explain", str(clip), "--checkpoint", TINY, "--out", str(png)]) == 0
    w, h = Image.open(png).size
    assert w == 16 * 96 and h == 2 * 96 + 48
    assert main(["explain", str(clip), "--checkpoint", TINY, "--out", str(tmp_path / "maps.gif")]) == 2
    assert main(["explain", str(clip), "--checkpoint", TINY, "--class", "joy"]) == 2
    assert main(["explain", str(clip), "--checkpoint", TINY, "--class", "anger", "--versus", "anger"]) == 2
    assert main(["explain", str(clip), "--checkpoint", TINY, "--class", "anger", "--versus", "none",
                 "--out", str(npz)]) == 0
    assert str(np.load(npz)["versus"]) == "" and float(np.load(npz)["score"]) == float(np.load(npz)["logit"])
    assert not (tmp_path / "maps.gif").exists()


def test_app_explain_endpoints_return_maps_as_arrays_and_images(served):
    from gradio_client import handle_file

    appmod, client = served
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/explain_expression", "/explain_descriptor"} <= set(api)
    with pytest.raises(Exception, match="predict one"):  # no clip yet in this session
        client.predict(TINY, "predicted class", api_name="/explain_expression")
    client.predict(handle_file(str(feat_clip("single_face.mp4"))), TINY, api_name="/predict")
    gallery, strip, note, data = client.predict(TINY, "predicted class", api_name="/explain_expression")
    assert len(gallery) == 16 and all(item["caption"].endswith("%") for item in gallery)
    assert np.asarray(data["maps"]["video"]).shape == (16, 4, 4) and data["size"] == [64, 64]
    assert len(data["frame_relevancy"]) == len(data["frame_occlusion"]) == 16
    rows = data["strip"]["data"]  # per frame: its number, time, relevancy share and occlusion share (%)
    assert [r[0] for r in rows] == list(range(1, 17)) and sum(r[2] for r in rows) == pytest.approx(100, abs=0.1)
    assert [r[2] for r in rows] == pytest.approx([100 * v for v in data["frame_relevancy"]], abs=0.1)
    assert strip.count("<rect") == 32 and "<script" not in strip  # drawn: two columns a frame
    assert "untrained" in note  # the banner's warning
    model = appmod.demo.ctx.model(TINY)
    _, _, _, other = client.predict(TINY, model.class_names[3], api_name="/explain_expression")
    assert other["target"] == f'class "{model.class_names[3]}"' and other["versus"] == 'class "neutral"'
    _, _, _, raw = client.predict(TINY, model.class_names[3], "none", api_name="/explain_expression")
    assert raw["versus"] is None and raw["score"] == raw["logit"] == other["logit"] and raw["maps"] != other["maps"]
    with pytest.raises(Exception, match="itself"):
        client.predict(TINY, model.class_names[3], model.class_names[3], api_name="/explain_expression")
    first = client.predict(TINY, model.class_names[0], "raised cheeks", api_name="/explain_descriptor")
    row, no_change = first[3], first[4]
    assert row["target"].startswith('text "raised cheeks"') and no_change == [] and "change" not in row
    # an edit: its new map, and how the map changed from the text before (per frame, new minus old)
    gallery, _, note, edited, change = client.predict(TINY, model.class_names[0], "a wide open mouth",
                                                      api_name="/explain_descriptor")
    assert row["maps"] != edited["maps"] and len(change) == 16 and 'Change from "raised cheeks"' in note
    assert edited["change"]["from_text"] == "raised cheeks"
    delta = np.asarray(edited["change"]["maps"]["video"])
    expected = np.asarray(edited["maps"]["video"]) - np.asarray(row["maps"]["video"])
    assert delta.shape == (16, 4, 4) and np.abs(delta - expected).max() <= 2e-3 and np.abs(delta).max() > 0.01
    # another class is another row: no change drawn against the first row's text
    *_, other_row, other_change = client.predict(TINY, model.class_names[1], "raised cheeks",
                                                 api_name="/explain_descriptor")
    assert other_change == [] and "change" not in other_row
