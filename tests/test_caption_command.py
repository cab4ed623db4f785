"""``python -m dferclip caption``: synthetic clips captioned through a real OpenAI-compatible server on 127.0.0.1,
the refined captions stored per clip, resumed runs, failures and configuration errors as exit codes, and the
caption file feeding FineCLIPER's caption stream."""
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from workbench_helpers import FakeOpenAI, completion

import dferclip
from dferclip.cli import main
from dferclip.models.fineclipper import fineclipper_config
from dferclip.training.captions import (
    FINE_GRAINED_PROMPT,
    CaptionStore,
    clip_key,
    jpeg_data_url,
)
from dferclip.training.data import list_frames, open_dataset, read_annotation
from dferclip.training.synthetic import CLASS_NAMES, write_frame_dataset

KEY = "sk-caption-test-8152"
LEAKY = ("The mouth corners pull up and the cheeks rise, and the eyes narrow slightly. She smiles broadly, "
         "suggesting happiness. Her head tilts back as the lips part.")
REFINED = ("The mouth corners pull up and the cheeks rise, and the eyes narrow slightly. Her head tilts back as the "
           "lips part.")
FRAMES, SIZE = 4, 32


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("DFERCLIP_LLM_MODEL", raising=False)


@pytest.fixture
def server():
    s = FakeOpenAI()
    s.respond = lambda body: (200, completion(LEAKY), 0)
    yield s
    s.close()


@pytest.fixture
def data(tmp_path):
    """Three synthetic clips of 10-14 frames as frame folders and an official-format list."""
    return write_frame_dataset(tmp_path / "data", 1, size=SIZE, frames=(10, 14), classes=CLASS_NAMES[:3])


def clip_folders(list_file):
    return [r.path for r in read_annotation(list_file)[0]]


def caption(url, data, out, *extra):
    return main(["caption", "--data", str(data), "--output", str(out), "--base-url", url, "--model", "fake-vision",
                 "--frames", str(FRAMES), "--image-size", str(SIZE), "--max-retries", "0", *extra])


def images_of(request):
    (msg,) = request["body"]["messages"]
    return tuple(p["image_url"]["url"] for p in msg["content"] if p["type"] == "image_url")


def spread_images(folder):
    """The data URLs of FRAMES frames from the first to the last frame of the clip, evenly spaced."""
    files = list_frames(folder)
    assert len(files) > FRAMES
    idx = np.linspace(0, len(files) - 1, FRAMES).round().astype(int)
    assert idx[0] == 0 and idx[-1] == len(files) - 1
    return tuple(jpeg_data_url(np.asarray(Image.open(files[i]).convert("RGB")), SIZE) for i in idx)


def test_every_clip_gets_a_refined_caption_and_a_second_run_is_all_cached(server, data, tmp_path, capsys):
    out = tmp_path / "captions.json"
    folders = clip_folders(data)
    assert caption(server.url, data, out) == 0
    assert "3 described, 0 already cached, 0 failed" in capsys.readouterr().out

    # each clip once, as FRAMES images spread over the whole clip, with the paper's prompt and the key
    assert len(server.requests) == 3
    assert {images_of(r) for r in server.requests} == {spread_images(f) for f in folders}
    for req in server.requests:
        assert req["headers"]["authorization"] == f"Bearer {KEY}" and req["body"]["model"] == "fake-vision"
        parts = req["body"]["messages"][0]["content"]
        assert parts[0] == {"type": "text", "text": FINE_GRAINED_PROMPT} and f"{FRAMES} frames" in parts[1]["text"]

    store = CaptionStore(out)
    assert len(store) == 3
    for folder in folders:
        rec = store.get(clip_key(folder))
        assert rec.raw == LEAKY and rec.refined == REFINED and rec.frames == FRAMES and rec.source == folder
        assert rec.removed == ["She smiles broadly, suggesting happiness."]
        assert "smile" not in rec.refined.lower() and "happiness" not in rec.refined.lower()
    assert KEY not in out.read_text()

    before = out.read_text()
    assert caption(server.url, data, out) == 0
    assert "0 described, 3 already cached, 0 failed" in capsys.readouterr().out
    assert len(server.requests) == 3 and out.read_text() == before

    # --overwrite with --limit describes the first clip again, with the extra leak word removed too
    assert caption(server.url, data, out, "--overwrite", "--limit", "1", "--extra-leak-words", "cheeks, nervous") == 0
    assert "1 described, 0 already cached, 0 failed" in capsys.readouterr().out
    assert len(server.requests) == 4 and images_of(server.requests[-1]) == spread_images(folders[0])
    store = CaptionStore(out)
    assert store.text(clip_key(folders[0])) == "Her head tilts back as the lips part."
    assert [store.text(clip_key(f)) for f in folders[1:]] == [REFINED, REFINED]


def test_a_failing_clip_gives_exit_code_1_and_the_others_are_stored(server, data, tmp_path, capsys):
    out = tmp_path / "captions.json"
    folders = clip_folders(data)
    broken = spread_images(folders[1])

    def respond(body):
        if images_of({"body": body}) == broken:
            return 500, {"error": {"message": "overloaded", "type": "server_error"}}, 0
        return 200, completion(LEAKY), 0

    server.respond = respond
    assert caption(server.url, data, out) == 1
    printed = capsys.readouterr().out
    assert "2 described, 0 already cached, 1 failed" in printed
    failed = printed.split("failed clips:")[1]
    assert f"{folders[1]}:" in failed and "500" in failed
    assert folders[0] not in failed and folders[2] not in failed
    store = CaptionStore(out)
    assert store.missing(clip_key(f) for f in folders) == [clip_key(folders[1])]
    assert store.text(clip_key(folders[0])) == REFINED

    server.respond = lambda body: (200, completion(LEAKY), 0)  # the server recovers: only that clip is asked
    assert caption(server.url, data, out) == 0
    assert "1 described, 2 already cached, 0 failed" in capsys.readouterr().out
    assert images_of(server.requests[-1]) == broken and len(CaptionStore(out)) == 3


def test_no_key_is_a_configuration_error(server, data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    out = tmp_path / "captions.json"
    assert caption(server.url, data, out) == 2
    err = capsys.readouterr().err
    assert "error: no API key" in err and "OPENAI_API_KEY" in err
    assert not out.exists() and server.requests == []


def test_unreachable_server_is_a_configuration_error(data, tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "captions.json"
    assert caption(f"http://127.0.0.1:{port}/v1", data, out) == 2
    err = capsys.readouterr().err
    assert "error: cannot reach model fake-vision" in err and "stopped: 0 captions saved" in err


def test_datasets_without_clip_files_are_refused(server, tmp_path, capsys):
    assert caption(server.url, "hf:some/dataset", tmp_path / "c.json") == 2
    assert "hf: datasets cannot be captioned" in capsys.readouterr().err
    (tmp_path / "not-captions.json").write_text(json.dumps({"format": "something else"}))
    assert caption(server.url, tmp_path, tmp_path / "not-captions.json") == 2
    assert "is not a caption file" in capsys.readouterr().err and server.requests == []


def test_video_llava_without_a_gpu_is_a_configuration_error(data, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "captions.json"
    assert main(["caption", "--data", str(data), "--output", str(out), "--backend", "video-llava"]) == 2
    assert "Video-LLaVA needs a CUDA GPU" in capsys.readouterr().err and not out.exists()
    assert main(["caption", "--data", str(data), "--output", str(out), "--backend", "video-llava",
                 "--base-url", "http://127.0.0.1:1/v1"]) == 2
    assert "--base-url is for --backend openai" in capsys.readouterr().err


def test_captions_emptied_by_refinement_are_pointed_out(server, data, tmp_path, capsys):
    server.respond = lambda body: (200, completion("She smiles broadly, suggesting happiness."), 0)
    out = tmp_path / "captions.json"
    assert caption(server.url, data, out, "--limit", "2") == 0
    printed = capsys.readouterr().out
    assert "2 described" in printed and "2 of the new captions named the emotion in every sentence" in printed
    assert CaptionStore(out).text(clip_key(clip_folders(data)[0])) is None


def test_caption_file_feeds_the_fineclipper_caption_stream(server, data, tmp_path, capsys):
    from dferclip.text.tokens import tokenize
    from dferclip.training.evaluate import caption_coverage, open_captions

    out = tmp_path / "captions.json"
    assert caption(server.url, data, out) == 0
    # the same clips as a <class>/<clip> tree: keys are content hashes, so all are already captioned
    tree = tmp_path / "tree"
    for r in read_annotation(data)[0]:
        shutil.copytree(r.path, tree / CLASS_NAMES[r.label] / f"clip-{r.line}")
    assert caption(server.url, tree, out) == 0
    assert "0 described, 3 already cached, 0 failed" in capsys.readouterr().out

    model = dferclip.build_model(fineclipper_config("text", base="fineclipper-tiny"))
    assert model.uses_captions
    for spec in (data, tree):
        ds = open_dataset(spec, model.input_config, class_names=model.class_names)
        wrapped = model.wrap_dataset(ds, captions=open_captions(out))
        assert len(wrapped) == 3 and wrapped.missing_captions == []
        assert caption_coverage(wrapped) == {"clips": 3, "without_caption": 0}
    inputs, _ = wrapped[0]
    assert inputs["caption_present"].item()
    assert inputs["caption_tokens"].tolist() == tokenize([REFINED])[0].tolist()


def test_video_tree_captions_are_keyed_by_the_video_file(server, tmp_path, capsys):
    """Captions made from one extraction of the videos (default cache inside the tree, 224 px crops) are found
    by a dataset that extracted them again elsewhere at the model's size, as train does."""
    from dferclip.training.data import SOURCE_KEY_FILE
    from dferclip.training.synthetic import write_video_dataset

    videos = tmp_path / "videos"
    write_video_dataset(videos, 1, size=64, frames=(8, 10), classes=CLASS_NAMES[:2])
    out = tmp_path / "captions.json"
    assert caption(server.url, videos, out) == 0
    assert "2 described" in capsys.readouterr().out and len(server.requests) == 2
    for _ in range(2):  # the tree now holds the hidden .dferclip-frames cache: it is not a class
        assert caption(server.url, videos, out) == 0
        assert "0 described, 2 already cached, 0 failed" in capsys.readouterr().out
    assert len(server.requests) == 2
    model = dferclip.build_model(fineclipper_config("text", base="fineclipper-tiny"))
    ds = open_dataset(videos, model.input_config, class_names=model.class_names, cache_dir=tmp_path / "elsewhere")
    assert len(ds) == 2 and all((Path(r.path) / SOURCE_KEY_FILE).is_file() for r in ds.records)
    assert model.wrap_dataset(ds, captions=CaptionStore(out)).missing_captions == []
