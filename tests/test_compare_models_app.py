"""The Predict tab's "Compare models" (issue 24, item 5) in the running public app, through gradio_client: the
same clip under a DFER-CLIP, a FineCLIPER and an EmoCLIP model, each with its label, probabilities and timeline,
equal to each model's own prediction; a visitor cannot name a model that is not on offer."""
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file

from app_helpers import feat_clip
from test_share import start_app, stop_app

FAMILIES = ("dferclip-tiny", "fineclipper-tiny", "emoclip-tiny")


@pytest.fixture(scope="module")
def app_with_three_families(tmp_path_factory):
    """The public app whose checkpoints folder holds a tiny model of each family (fixed weights)."""
    from dferclip.weights.checkpoints import load_model, save_model

    root = tmp_path_factory.mktemp("compare-models")
    torch.manual_seed(5)
    keys = [str(save_model(load_model(f"random:{name}"), root / "checkpoints" / name)) for name in FAMILIES]
    mp = pytest.MonkeyPatch()
    mp.setenv("DFERCLIP_CHECKPOINTS", str(root / "checkpoints"))
    demo, url = start_app(keys[0], root / "app", mp)
    try:
        yield demo, url, keys
    finally:
        stop_app(demo)
        mp.undo()


def test_three_families_side_by_side_each_as_its_own_prediction(app_with_three_families):
    from dferclip.predict import predict_clip

    demo, url, keys = app_with_three_families
    clip = feat_clip("single_face.mp4")
    client = Client(url, verbose=False, download_files=False)
    summary, table, charts, data = client.predict(handle_file(str(clip)), keys, api_name="/compare_models")
    entries = data["models"]
    assert [e["model"] for e in entries] == keys
    assert "decoded and its face found once" in summary
    assert summary.count("untrained weights") == 3  # random weights: said for each model
    headers = table["headers"]
    assert headers[0] == "class" and len(headers) == 4  # a column per model
    assert charts.count("<svg") == 3 and all(f"{i}. " in charts for i in (1, 2, 3))
    for e in entries:
        own = predict_clip(demo.ctx.model(e["model"]), clip, dev="cpu")
        np.testing.assert_allclose([e["probabilities"][c] for c in own.classes], own.probs, atol=1e-5)
        assert e["top"] == own.top
        assert len(e["timeline"]) == len(own.timeline) * len(own.classes) > 0
    rows = {r[0]: r[1:] for r in table["data"]}
    first = entries[0]["probabilities"]
    assert [float(v) for v in [rows[c][0] for c in first]] == pytest.approx([100 * p for p in first.values()], abs=0.06)


def test_a_visitor_cannot_compare_one_model_or_one_not_on_offer(app_with_three_families):
    _, url, keys = app_with_three_families
    client = Client(url, verbose=False, download_files=False)
    clip = handle_file(str(feat_clip("single_face.mp4")))
    for picks, said in [([keys[0]], "two or three"), ([keys[0], "/etc/passwd"], "")]:
        with pytest.raises(Exception) as e:
            client.predict(clip, picks, api_name="/compare_models")
        assert said in str(e.value)
    with pytest.raises(Exception) as e:
        client.predict(None, keys[:2], api_name="/compare_models")
    assert "Upload a clip" in str(e.value)
