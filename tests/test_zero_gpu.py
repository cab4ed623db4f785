"""ZeroGPU's worker boundary, proven on a CPU: the stand-in of ``spaces.GPU`` (``DFERCLIP_GPU_BOUNDARY=check``)
pickles every crossing, refuses a model in one or one too big, and refuses device work outside a GPU function.
The running public app is driven through it with gradio_client, endpoint by endpoint, and gives what the same
app gives without it."""
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

import dferclip
from app_helpers import TINY, feat_clip, free_port
from test_local_llm import CLASSES, REPLIES, TEMPLATE, hub, local_env, local_settings  # noqa: F401 (fixtures)
from dferclip import zero_gpu
from dferclip.predict import predict_clip
from dferclip.zero_gpu import GpuBoundaryError

ROWS = {"headers": ["class", "description"], "metadata": None}


@pytest.fixture
def check(monkeypatch):
    monkeypatch.setenv(zero_gpu.BOUNDARY_ENV, "check")
    zero_gpu.stats.clear()
    return zero_gpu.stats


# --- the stand-in itself -----------------------------------------------------------------------------------
def _first_row(x: torch.Tensor) -> torch.Tensor:
    zero_gpu.require("test work")
    return x[0].clone()


def _model_in(model) -> int:
    return 1


def _big(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.uint8)


def _rows(x: torch.Tensor):
    for row in x:
        zero_gpu.require("test work")
        yield row.clone()


def test_crossings_are_pickled_and_checked(check):
    first = zero_gpu.gpu(_first_row, duration=lambda x: 3 + len(x))
    x = torch.arange(6.0).view(3, 2)
    out = first(x)
    assert torch.equal(out, x[0]) and out.data_ptr() != x.data_ptr()  # a copy came back, as from a worker
    assert check.calls["_first_row"] == 1 and check.durations["_first_row"] == 6  # asked from the work's size
    with pytest.raises(GpuBoundaryError, match="Linear model crosses the GPU boundary"):
        zero_gpu.gpu(_model_in)(torch.nn.Linear(2, 2))
    with pytest.raises(GpuBoundaryError, match="crosses the GPU boundary"):
        zero_gpu.gpu(_model_in)({"nested": [torch.nn.Linear(2, 2)]})
    with pytest.raises(GpuBoundaryError, match="bounded to 4 MB"):
        zero_gpu.gpu(_big)(5 * 1024**2)
    with pytest.raises(GpuBoundaryError, match="cannot be pickled"):
        zero_gpu.gpu(_model_in)(threading.Lock())
    rows = list(zero_gpu.gpu(_rows)(x))  # a generator: each item crosses back
    assert all(torch.equal(a, b) for a, b in zip(rows, x)) and len(rows) == 3


def test_device_work_outside_a_gpu_function_is_refused(check, monkeypatch):
    x = torch.ones(2, 2)
    with pytest.raises(GpuBoundaryError, match="outside a GPU function"):
        zero_gpu.place(x, "cpu")
    with pytest.raises(GpuBoundaryError, match="outside a GPU function"):
        _first_row(x)
    model = zero_gpu.guard(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(GpuBoundaryError, match="Sequential.forward ran outside"):
        model(x)
    assert zero_gpu.gpu(lambda: model(x).shape)() == (2, 2)  # inside a slot it runs
    monkeypatch.delenv(zero_gpu.BOUNDARY_ENV)  # no boundary: plain calls, nothing refused
    assert zero_gpu.place(x, "cpu") is x and model(x).shape == (2, 2)


@pytest.mark.parametrize("source", [TINY, "random:fineclipper-tiny"])
def test_library_prediction_through_the_boundary_equals_a_plain_one(check, monkeypatch, source):
    """The model crosses by key: the registry serves it; the result is the plain prediction's, to the bit
    (FineCLIPER's face mesh is drawn before the slot, its renders cross as uint8)."""
    from dferclip.runtime import ModelRegistry, find_models

    registry = ModelRegistry(find_models(source), background=False, backend="eager")
    registry.start_slots()
    model = registry.get(source)
    clip = feat_clip("single_face.mp4")
    checked = predict_clip(model, clip)
    assert check.calls["_iter_on_device(score_prepared)"] == 1
    assert check.largest["the arguments of _iter_on_device(score_prepared)"] < 16 * 1024**2  # uint8 frames
    monkeypatch.delenv(zero_gpu.BOUNDARY_ENV)
    plain = predict_clip(model, clip)
    np.testing.assert_array_equal(checked.probs, plain.probs)
    np.testing.assert_array_equal(checked.timeline.probabilities, plain.timeline.probabilities)
    assert checked.encoded_frames == plain.encoded_frames and checked.device == plain.device
    assert checked.streams == plain.streams
    if checked.renders is not None:
        assert all(np.array_equal(a, b) for k in checked.renders for a, b in zip(checked.renders[k], plain.renders[k]))


def test_every_face_of_a_clip_is_read_in_one_gpu_slot(check, monkeypatch, tmp_path):
    """Two real people: predict_faces crosses the boundary once for both faces, and each face's result is the one
    a slot of its own gives."""
    from media import moving_face_frames, portrait_face, write_video

    from dferclip.predict import predict_faces, prepare_faces
    from dferclip.runtime import ModelRegistry, find_models

    faces = [portrait_face("0-f15-hao-ph.jpg", 150), portrait_face("45-m7-di-ph.jpg", 150)]
    clip = write_video(tmp_path / "two.mp4", [f for f, _ in moving_face_frames(50, 640, 360, faces)])
    registry = ModelRegistry(find_models(TINY), background=False, backend="eager")
    registry.start_slots()
    model = registry.get(TINY)
    together = predict_faces(model, clip)
    assert len(together) == 2 and check.calls["_iter_on_device(score_prepared)"] == 1
    (prepared,) = prepare_faces([model], clip)
    apart = [predict_clip(model, clip, prepared=p) for p in prepared]
    assert check.calls["_iter_on_device(score_prepared)"] == 3
    for a, b in zip(together, apart):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
        np.testing.assert_allclose(a.timeline.probabilities, b.timeline.probabilities, atol=1e-6)
        assert a.ingest.track_id == b.ingest.track_id and a.encoded_frames == b.encoded_frames


def test_a_model_the_registry_does_not_serve_is_refused(check):
    model = dferclip.load_model(TINY)
    with pytest.raises(GpuBoundaryError, match="needs a served model"):
        predict_clip(model, feat_clip("single_face.mp4"))


# --- the running public app, every endpoint ----------------------------------------------------------------
@pytest.fixture(scope="module")
def apps(tmp_path_factory, llm_server):
    """The public app twice, with and without the stand-in, each with its own folders."""
    import app

    mp = pytest.MonkeyPatch()
    torch.manual_seed(0)
    key = str(dferclip.save_model(dferclip.load_model(TINY), tmp_path_factory.mktemp("tiny") / "m"))
    served = {"key": key}  # both apps run the same weights
    for name in ("plain", "check"):
        tmp = tmp_path_factory.mktemp(name)
        for k, v in {"DFERCLIP_DESCRIPTIONS": str(tmp / "descriptions"), "DFERCLIP_CACHE": str(tmp / "cache"),
                     "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": llm_server.url, "DFERCLIP_LLM_MODEL": "m",
                     "DFERCLIP_BACKEND": "eager"}.items():
            mp.setenv(k, v)
        if name == "check":
            mp.setenv(zero_gpu.BOUNDARY_ENV, "check")
        else:
            mp.delenv(zero_gpu.BOUNDARY_ENV, raising=False)
        demo = app.build_demo(key, mode="public")
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    **app.launch_kwargs(demo))
        served[name] = (demo, f"http://127.0.0.1:{port}/")
    mp.delenv(zero_gpu.BOUNDARY_ENV)  # the mode is read at each call: a test turns it on for the checked app
    yield served
    for demo, _ in (served["plain"], served["check"]):
        demo.close()
        demo.ctx.close()
    mp.undo()


@pytest.fixture(scope="module")
def llm_server():
    from workbench_helpers import FakeOpenAI, completion

    server = FakeOpenAI()
    server.respond = lambda body: (200, completion('{"descriptions": ["a wide smile with raised cheeks"]}'), 0)
    yield server
    server.close()


def _official_rows() -> dict:
    data = json.loads((Path(__file__).resolve().parent.parent / "descriptions" / "dferclip-official-dfew.json")
                      .read_text())
    return {**ROWS, "data": [[c["name"], d] for c in data["classes"] for d in c["descriptions"]]}


def _visit(url: str, key: str, tmp_path) -> dict:
    """One visitor's tour of every endpoint that runs the model; what each gave."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    c = Client(url, verbose=False, download_files=False)
    clip = handle_file(str(feat_clip("single_face.mp4")))
    out = {"predict": c.predict(clip, key, api_name="/predict")[0]}
    stream = c.submit(clip, key, api_name="/predict_stream")
    out["stream"] = [step[0] for step in stream][-1]
    out["annotate"] = c.predict(api_name="/annotate")
    ex = c.predict(key, "predicted class", api_name="/explain_expression")
    out["explain"] = ex[-1]
    ex = c.predict(key, "happiness", "raised cheeks", api_name="/explain_descriptor")
    out["explain_descriptor"] = ex[3]
    scores = c.predict(key, _official_rows(), "mean-embedding", api_name="/rescore_descriptions")
    out["rescore"] = next(o for o in scores if isinstance(o, dict) and "headers" in o
                          and "zero-shot %" in o["headers"])["data"]
    frame = tmp_path / "frame.jpg"
    import av

    with av.open(str(feat_clip("single_face.mp4"))) as v:
        Image.fromarray(next(v.decode(video=0)).to_ndarray(format="rgb24")).save(frame, quality=90)
    out["live"] = [c.predict(handle_file(str(frame)), key, api_name="/live")[1] for _ in range(3)][-1]
    labels = tmp_path / "labels.csv"
    two = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for p in two:
        p.write_bytes(feat_clip("single_face.mp4").read_bytes())
    labels.write_text("a.mp4,happiness\nb.mp4,sadness\n")
    out["evaluation"] = c.predict(key, [handle_file(str(p)) for p in (labels, *two)],
                                  api_name="/load_evaluation_set")
    gen = c.predict(key, "dferclip", "m", "", "", ["happiness"], 1, "replace", "system", "Describe {name}.",
                    "mean-embedding", "openai", "qwen2.5-0.5b-instruct", api_name="/generate_descriptions")
    out["generate"] = gen
    return out


def _close(a, b, atol=1e-5):
    """Nested API outputs equal, numbers within ``atol`` (timings and file paths aside)."""
    if isinstance(a, dict) and isinstance(b, dict):
        skip = {"url", "path", "orig_name", "size", "meta", "is_stream", "mime_type"}
        assert set(a) - skip == set(b) - skip
        for k in set(a) - skip:
            _close(a[k], b[k], atol)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y, atol)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=atol)


def test_every_endpoint_runs_through_the_boundary_and_gives_the_plain_app_s_answers(apps, tmp_path, monkeypatch):
    monkeypatch.setenv(zero_gpu.BOUNDARY_ENV, "check")  # one process has one boundary: the checked app first
    zero_gpu.stats.clear()
    checked = _visit(apps["check"][1], apps["key"], tmp_path / "check")
    calls = dict(zero_gpu.stats.calls)
    monkeypatch.delenv(zero_gpu.BOUNDARY_ENV)
    plain = _visit(apps["plain"][1], apps["key"], tmp_path / "plain")
    # predict and stream (a generator), explain, live, the workbench's texts, its clips and evaluation set
    assert {"_iter_on_device(score_prepared)", "_on_device(_explain_in_slot)", "_on_device(frame_scores)",
            "_on_device(encode_prompts)", "_on_device(encode_texts)", "_on_device(_encode_clip)"} <= set(calls), calls
    assert max(v for k, v in zero_gpu.stats.largest.items() if "result" in k or "yields" in k) \
        <= zero_gpu.MAX_RESULT_BYTES
    assert all(1 <= s <= zero_gpu.MAX_DURATION_S for s in zero_gpu.stats.durations.values())
    differ = []
    for what in ("predict", "stream", "explain", "explain_descriptor", "rescore", "live"):
        try:
            _close(checked[what], plain[what], atol=1e-4)
        except AssertionError as e:
            differ.append(f"{what}: {str(e)[:300]}")
    assert not differ, "\n".join(differ)
    # the annotated video: the same bytes (Gradio names a file by its content); the workbench's outputs: the same
    assert checked["annotate"]["path"] == plain["annotate"]["path"]
    for what in ("evaluation", "generate"):
        assert _without_urls(checked[what]) == _without_urls(plain[what]), what
    assert "Evaluation set: 2 clips" in checked["evaluation"][0]


def _without_urls(value):
    """An output without file URLs and without how many texts were encoded (the text cache is the process's:
    the second app finds the first one's)."""
    if isinstance(value, str):
        return re.sub(r"\d+ text encoding\(s\) computed", "N text encodings computed", value)
    if isinstance(value, dict):
        return {k: _without_urls(v) for k, v in value.items() if k != "url"}
    if isinstance(value, (list, tuple)):
        return [_without_urls(v) for v in value]
    return value


@pytest.mark.usefixtures("local_env")
def test_the_local_llm_answers_in_a_gpu_slot(check, monkeypatch):
    """A local model's reply crosses as messages and text; this process never loads the model."""
    from dferclip.text import local_llm
    from dferclip.text.llm import generate

    local_llm._LOADED.clear()
    gen = generate(CLASSES[:2], "dferclip", settings=local_settings(), template=TEMPLATE)
    assert check.calls["_reply_in_slot"] == 2  # one slot per class
    assert isinstance(local_llm.local_chat("tiny-describer"), local_llm.SlotChat)
    monkeypatch.delenv(zero_gpu.BOUNDARY_ENV)
    assert gen.descriptions == generate(CLASSES[:2], "dferclip", settings=local_settings(),
                                        template=TEMPLATE).descriptions == [[REPLIES[c]] for c in CLASSES[:2]]


def test_on_zero_gpu_the_functions_go_to_spaces_gpu_at_import_with_their_work_s_duration(monkeypatch):
    """With SPACES_ZERO_GPU set, ``spaces.GPU`` gets each function when it is decorated (spaces reports them
    at start-up), a generator as a generator, and a duration function of the call's own arguments."""
    import inspect
    import sys
    import types

    given = []

    def GPU(duration=None):
        def wrap(task):
            given.append((task, duration))

            def run(*args, **kwargs):
                seconds = duration(*args, **kwargs)
                out = task(*args, **kwargs)
                return (list(out) if inspect.isgeneratorfunction(task) else out), seconds
            return run
        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    monkeypatch.delenv(zero_gpu.BOUNDARY_ENV, raising=False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == "spaces" else None)
    assert zero_gpu.mode() == "zero"
    first = zero_gpu.gpu(_first_row, duration=lambda x: 500)
    rows = zero_gpu.gpu(_rows, duration=lambda x: 2 + len(x))
    assert len(given) == 2 and inspect.isgeneratorfunction(given[1][0])  # at decoration, before any call
    x = torch.arange(4.0).view(2, 2)
    out, seconds = first(x)  # require() passes: the worker's side is marked inside the slot
    assert torch.equal(out, x[0]) and seconds == zero_gpu.MAX_DURATION_S  # bounded
    out, seconds = rows(x)
    assert len(out) == 2 and seconds == 4
