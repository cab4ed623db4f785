"""Image tower backends: every installed faithful backend keeps the logits within 1e-3 of torch eager (tiny
model and the official conformance fixture), int8 only on request, and a missing, unfaithful or stale
backend falls back to eager with a log line."""
import json
import logging
import sys
import threading

import pytest
import torch

import dferclip
from app_helpers import feat_clip
from dferclip import backends
from dferclip.predict import predict_clip, score_sequences
from dferclip.runtime import CONVERSION_THREAD, ModelEntry, ModelRegistry

FAITHFUL = [pytest.param(b, marks=pytest.mark.slow) if b == "compile" else b
            for b in backends.installed() if b != "eager" and b not in backends.LOSSY]


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Conversions are cached by weights: a cache of this test session's own, so they convert for real."""
    monkeypatch.setenv("DFERCLIP_CACHE", str(tmp_path_factory.getbasetemp() / "backend-cache"))
    monkeypatch.delenv("DFERCLIP_BACKEND", raising=False)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    torch.manual_seed(0)
    return dferclip.save_model(dferclip.load_model("random:dferclip-tiny"), tmp_path_factory.mktemp("tiny") / "m")


def _frames(model, n=6, seed=1):
    cfg = model.input_config
    g = torch.Generator().manual_seed(seed)
    frames = cfg.normalize(torch.rand(n, 3, cfg.image_size, cfg.image_size, generator=g))
    positions = torch.stack([torch.arange(cfg.num_frames) % n, (torch.arange(cfg.num_frames) * 5) % n])
    return frames, positions


def _logits(model, frames, positions):
    return score_sequences(model, frames, positions, dev="cpu", dtype=torch.float32)[0]


@pytest.mark.parametrize("name", FAITHFUL)
def test_backend_keeps_tiny_model_logits(name, tiny_dir):
    registry = ModelRegistry([ModelEntry(str(tiny_dir), "tiny", "explicit")], dev="cpu", backend=name,
                             background=False)
    model = registry.get()
    assert backends.current(model).name == name
    assert backends.current(model).max_logit_delta <= backends.FAITHFUL_ATOL
    eager = dferclip.load_model(tiny_dir)
    frames, positions = _frames(model)
    fast, ref = _logits(model, frames, positions), _logits(eager, frames, positions)
    assert backends.in_use(model, "cpu", torch.float32) == name
    assert (fast - ref).abs().max() <= backends.FAITHFUL_ATOL
    pred = predict_clip(model, feat_clip("single_face.mp4"), windows=False)
    assert pred.backend == name
    assert abs(pred.logits - predict_clip(eager, feat_clip("single_face.mp4"), windows=False).logits).max() <= 1e-3


@pytest.mark.parametrize("name", FAITHFUL)
def test_backend_keeps_conformance_fixture_logits(name, conformance_path):
    from dferclip.weights.checkpoints import read_official

    fixture = read_official(conformance_path)["conformance"]
    model = dferclip.load_model(conformance_path)
    assert backends.accelerate(model, name).name == name
    video = fixture["input"]
    b, t = video.shape[:2]
    logits = _logits(model, video.flatten(0, 1), torch.arange(b * t).view(b, t))
    assert (logits - fixture["logits"]).abs().max() <= backends.FAITHFUL_ATOL
    assert torch.equal(logits.argmax(-1), fixture["logits"].argmax(-1))


def test_int8_only_when_asked_and_its_change_is_reported(tiny_dir, capsys):
    from dferclip.cli import main

    assert "int8" not in backends.AUTO_ORDER
    model = dferclip.load_model(tiny_dir)
    frames, positions = _frames(model)
    ref = _logits(model, frames, positions)
    info = backends.accelerate(model, "int8")
    assert (info.name, info.lossy) == ("int8", True) and info.max_logit_delta > 0
    assert (_logits(model, frames, positions) - ref).abs().max() > 0  # the quantised tower really runs
    assert main(["predict", str(feat_clip("single_face.mp4")), "--model", str(tiny_dir), "--backend", "int8",
                 "--json", "--no-timeline"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "int8"
    assert main(["predict", str(feat_clip("single_face.mp4")), "--model", str(tiny_dir), "--json",
                 "--no-timeline"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "eager"  # one clip: eager unless asked


def test_missing_backend_falls_back_to_eager(tiny_dir, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: importing it fails
    model = dferclip.load_model(tiny_dir)
    with caplog.at_level(logging.WARNING, logger="dferclip.backends"):
        info = backends.accelerate(model, "openvino")
    assert info.name == "eager" and "openvino is not installed" in info.note
    assert "using torch eager" in caplog.text
    assert backends.frame_function(model) == model.frame_features


def test_unfaithful_or_stale_backend_falls_back_to_eager(tiny_dir, caplog):
    model = dferclip.load_model(tiny_dir)
    name = "openvino" if "openvino" in backends.installed() else "int8"
    with caplog.at_level(logging.WARNING, logger="dferclip.backends"):
        info = backends.accelerate(model, name, atol=-1.0)  # no backend can be this faithful
    assert info.name == "eager" and "moved the logits" in info.note and "using torch eager" in caplog.text
    assert backends.accelerate(model, "int8").name == "int8"
    caplog.clear()
    with torch.no_grad():
        model.clip.visual.conv1.weight.mul_(1.5)  # new weights: the converted snapshot is stale
    with caplog.at_level(logging.WARNING, logger="dferclip.backends"):
        assert backends.in_use(model, "cpu", torch.float32) == "eager"
    assert "weights changed" in caplog.text
    frames, positions = _frames(model)
    with torch.inference_mode():
        eager = model.score(model.embed_sequences(model.frame_features(frames), positions), model.class_embeddings())
    assert torch.equal(_logits(model, frames, positions), eager)


def test_auto_leaves_small_towers_and_other_families_eager(tiny_dir):
    model = dferclip.load_model(tiny_dir)
    assert backends.accelerate(model).name == "eager"  # auto: a tiny tower gains nothing
    assert backends.accelerate(model, "int8", dtype=torch.bfloat16).name == "eager"
    fine = dferclip.load_model("random:fineclipper-tiny")
    assert "eagerly" in backends.accelerate(fine, "int8").note


@pytest.mark.skipif("openvino" not in backends.installed(), reason="openvino not installed")
def test_auto_keeps_a_backend_only_where_this_machine_ran_it_fast_enough(tiny_dir, monkeypatch):
    """auto times the backend against eager once per machine and tower architecture, at every frames-a-call
    size, keeps the verdict under the size the backend will run at, and uses the backend only at
    AUTO_MIN_SPEEDUP or more; a kept verdict is used without timing again."""
    from dferclip import files

    monkeypatch.setattr(backends, "AUTO_MIN_PARAMS", 0)  # let the tiny tower through the size rule
    verdicts = files.cache_dir() / "backend-speed.json"
    verdicts.unlink(missing_ok=True)
    model = dferclip.load_model(tiny_dir)
    used = backends.accelerate(model)
    kept = json.loads(verdicts.read_text())
    frames = backends.known_frame_batch(model, "openvino")
    assert frames in backends.frame_batch_sizes(model.input_config.num_frames)
    assert backends.known_frame_batch(model, "eager") in backends.frame_batch_sizes(model.input_config.num_frames)
    key = backends._speed_key(model, "openvino", frames)
    assert key.endswith(f"|{frames} frames a call")
    measured = kept[key]["speedup"]
    assert measured > 0
    if measured >= backends.AUTO_MIN_SPEEDUP:
        assert used.name == "openvino" and used.speedup == pytest.approx(measured, abs=1e-3)
        assert used.frame_batch == frames and backends.frame_batch(model, "cpu", torch.float32) == frames
    else:
        assert used.name == "eager" and f"{measured:.2f}x as fast as eager" in used.note
    batch_key = backends._batch_key(model, "openvino")
    for speedup, expected in ((1.0, "eager"), (2.0, "openvino")):
        files.write_json(verdicts, {batch_key: kept[batch_key], key: {"speedup": speedup, "measured": "kept"}})
        used = backends.accelerate(dferclip.load_model(tiny_dir))
        assert used.name == expected and json.loads(verdicts.read_text())[key]["measured"] == "kept"
        assert expected == "openvino" or "1.00x as fast as eager" in used.note
    assert used.speedup == 2.0 and used.frame_batch == frames
    # a verdict at another size is not this size's: the backend is timed again
    other = next(n for n in backends.frame_batch_sizes(model.input_config.num_frames) if n != frames)
    files.write_json(verdicts, {batch_key: {"frames": other}, key: {"speedup": 2.0, "measured": "kept"}})
    backends.accelerate(dferclip.load_model(tiny_dir))
    assert backends._speed_key(model, "openvino", backends.known_frame_batch(model, "openvino")) in json.loads(
        verdicts.read_text())
    # other weights of the same architecture share the verdict; another architecture is timed on its own
    assert backends._speed_key(dferclip.load_model("random:dferclip-tiny"), "openvino", frames) == key
    assert backends._speed_key(dferclip.load_model("random:dferclip-vit-b-32"), "openvino", frames) != key


def test_backend_names_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="use one of"):
        backends.requested_backend("fastest")
    monkeypatch.setenv("DFERCLIP_BACKEND", "OpenVINO")
    assert backends.requested_backend() == "openvino"
    monkeypatch.setenv("DFERCLIP_BACKEND", "tensorrt")
    with pytest.raises(ValueError):
        ModelRegistry([ModelEntry("random:dferclip-tiny", "tiny", "explicit")])


def test_registry_converts_in_the_background(tiny_dir):
    registry = ModelRegistry([ModelEntry(str(tiny_dir), "tiny", "explicit")], dev="cpu", backend="int8")
    model = registry.get()  # returns at once; the app's first clips run eagerly meanwhile
    for thread in registry.conversions():
        thread.join(timeout=120)
    assert backends.current(model).name == "int8"
    pred = predict_clip(model, feat_clip("single_face.mp4"), windows=False)
    assert pred.backend == "int8" and pred.to_dict()["backend"] == "int8"
    assert registry.close(timeout=0) and backends.current(model).name == "int8"  # a finished one is kept


def _still_running(threads: list[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t in threads]


@pytest.fixture
def held_int8(monkeypatch):
    """The real int8 build, held in its thread until ``release`` is set: (entered, release) events."""
    entered, release = threading.Event(), threading.Event()
    real = backends._BUILDERS["int8"]

    def build(tower, size, cache):
        entered.set()
        release.wait(120)
        return real(tower, size, cache)

    monkeypatch.setitem(backends._BUILDERS, "int8", build)
    yield entered, release
    release.set()


def test_closing_the_registry_stops_and_joins_its_conversion(tiny_dir, held_int8):
    entered, release = held_int8
    registry = ModelRegistry([ModelEntry(str(tiny_dir), "tiny", "explicit"),
                              ModelEntry("random:dferclip-tiny", "other", "default")], dev="cpu", backend="int8")
    model = registry.get()
    assert entered.wait(60)
    threads = registry.conversions()
    assert [t.name for t in _still_running(threads)] == [CONVERSION_THREAD]
    assert registry.close(timeout=0) is False  # still inside the build
    release.set()
    assert registry.close(timeout=60) is True
    assert not _still_running(threads)
    assert backends.current(model).name == "eager"  # abandoned before its int8 tower was attached
    other = registry.get("random:dferclip-tiny")  # a closed registry still serves models, converting none
    assert not registry.conversions() and backends.current(other).name == "eager"


def test_closing_the_app_leaves_no_conversion_running(tiny_dir, held_int8, monkeypatch):
    import app

    entered, release = held_int8
    monkeypatch.setenv("DFERCLIP_BACKEND", "int8")
    demo = app.build_demo(str(tiny_dir))  # the banner loads the model, which starts converting
    assert entered.wait(60)
    threads = demo.ctx.registry.conversions()
    assert [t.name for t in _still_running(threads)] == [CONVERSION_THREAD]
    threading.Timer(1.0, release.set).start()  # the build ends a second into close(), which waits for it
    assert demo.ctx.close(timeout=60)
    assert not _still_running(threads)
    assert backends.current(demo.ctx.registry.get()).name == "eager"


def test_the_predict_command_offers_every_backend():
    from dferclip.commands.predict import BACKEND_CHOICES

    assert BACKEND_CHOICES == backends.CHOICES  # the command names them without importing torch
