"""Explanations (dferclip.explain): the explained logit is the model's own, maps and frame measures have the
right form for both families, the CLI and the app's endpoints deliver them, and, on a tiny model trained here on
synthetic faces whose classes differ by which part moves, the maps point at that part and the frame relevancy at
the apex, while the same checks fail once the model's weights are shuffled.

Margins (held-out clips; the same bound must fail with shuffled weights; boxes grown by half a patch):
- mouth classes: relevancy mass in the mouth box >= 2.5x the box's share of the crop on average and > 1.5x on
  80 % of clips (measured: trained x3.7, min x1.8; shuffled about x1);
- the frame with the highest relevancy has a mean expression intensity >= 0.75 and >= the clips' mean + 0.25
  (the apex is 1; measured: trained 0.86, shuffled 0.34-0.67, clip mean 0.40);
- NOT shown yet (xfail, kept to state the gap): the brow class's relevancy on the brows (measured x0.76) and the
  directional text contrast that follows from it. That maps depend on the text is checked on both families.
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
NAMES = list(PART_CLASSES)
FRAMES, SIZE = 8, 64
TRAIN_PER_CLASS, TEST_PER_CLASS, EPOCHS = 24, 5, 30
PAD = 4  # half a patch: the maps are bilinear upsamplings of an 8x8 grid of 8-pixel patches


def _clips(model, per_class: int, seed: int):
    xs, ys, curves = [], [], []
    for c, name in enumerate(NAMES):
        for i in range(per_class):
            frames, curve = generate_clip_with_intensity(name, np.random.default_rng([seed, c, i]), FRAMES, SIZE,
                                                         classes=NAMES, variation=0.0, expressions=PART_CLASSES)
            xs.append(model.input_config.normalize(frames_to_tensor(frames)))
            ys.append(c)
            curves.append(curve)
    return torch.stack(xs), torch.tensor(ys), np.stack(curves)


@pytest.fixture(scope="module")
def trained():  # about 2-3 minutes on a busy 2-core CPU
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
            accuracy = float((model(test[0]).argmax(-1) == test[1]).float().mean())
        assert accuracy >= 0.6, f"the tiny model did not learn the part classes (held-out accuracy {accuracy:.2f})"
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


def _text_contrast(model, test):
    """Fraction of clips on which the brow class's embedding (as a text) weighs the brows more than a mouth
    class's embedding does, and the mouth less."""
    x = test[0]
    with torch.no_grad():
        classes = model.class_embeddings()
    mouth_t, brow_t = classes[NAMES.index("smile")], classes[NAMES.index("brows raised")]
    boxes = part_boxes(SIZE)
    wins = []
    for i in range(len(x)):
        a = explain_clip(model, x[i : i + 1], text=mouth_t, occlusion=False).maps["video"]
        b = explain_clip(model, x[i : i + 1], text=brow_t, occlusion=False).maps["video"]
        assert not np.allclose(a, b, atol=1e-3), "the map does not depend on the text"
        brow_more = _mass_ratio(b, boxes["brows"]) > _mass_ratio(a, boxes["brows"])
        mouth_less = _mass_ratio(b, boxes["mouth"]) < _mass_ratio(a, boxes["mouth"])
        wins.append(brow_more and mouth_less)
    return float(np.mean(wins))


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
@pytest.mark.xfail(strict=False, reason="not shown yet: the tiny model trained here tells the brow class apart "
                   "with little relevancy on the brows (measured x0.76 of the box's share)")
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
@pytest.mark.xfail(strict=False, reason="not shown yet: follows the brow test (the brow class's map does not "
                   "weigh the brows); the maps do depend on the text (test_explained_logit_is_the_models_own)")
def test_maps_depend_on_the_text_in_the_right_direction(trained, shuffled):
    model, test = trained
    wins, shuffled_wins = _text_contrast(model, test), _text_contrast(shuffled, test)
    print(f"brow text weighs brows more and mouth less: trained {wins:.2f}, shuffled {shuffled_wins:.2f}")
    assert wins >= 0.8
    assert not shuffled_wins >= 0.8


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
    for c in range(model.num_classes):
        ex = explain_clip(model, inputs, class_index=c, occlusion=c == 0)
        assert ex.score == pytest.approx(float(logits[c]), abs=1e-5)
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
    assert a.score == pytest.approx(float(direct), abs=1e-4)
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
    with pytest.raises(ExplainError, match="RGB"):
        overlay(np.zeros((8, 8)), np.zeros((8, 8)))


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
    data = np.load(npz)
    assert data["map_video"].shape == (16, 64, 64) and data["crops"].shape == (16, 64, 64, 3)
    assert data["frame_relevancy"].shape == (16,) and data["frame_relevancy"].sum() == pytest.approx(1, abs=1e-4)
    assert main(["explain", str(clip), "--checkpoint", TINY, "--out", str(png)]) == 0
    w, h = Image.open(png).size
    assert w == 16 * 96 and h == 2 * 96 + 48
    assert main(["explain", str(clip), "--checkpoint", TINY, "--out", str(tmp_path / "maps.gif")]) == 2
    assert main(["explain", str(clip), "--checkpoint", TINY, "--class", "joy"]) == 2
    assert not (tmp_path / "maps.gif").exists()


@pytest.fixture(scope="module")
def served():
    from app_helpers import served_app

    with served_app() as served:
        yield served


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
    assert len(strip["data"]) == 32  # per frame: its relevancy share and its occlusion share
    assert "untrained" in note  # the banner's warning
    model = appmod.demo.ctx.model(TINY)
    _, _, _, other = client.predict(TINY, model.class_names[3], api_name="/explain_expression")
    assert other["target"] == f'class "{model.class_names[3]}"'
    _, _, _, row = client.predict(TINY, model.class_names[0], "raised cheeks", api_name="/explain_descriptor")
    _, _, _, edited = client.predict(TINY, model.class_names[0], "a wide open mouth", api_name="/explain_descriptor")
    assert row["target"].startswith('text "raised cheeks"') and row["maps"] != edited["maps"]
