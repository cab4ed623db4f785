"""One visitor cannot hold the public Space: another visitor's long jobs, a hanging LLM server and the app's
limits, attacked through the running app with gradio_client (issue 20). The figures (latency idle and under
attack, with the real-size model) are in benchmarks/bench_load.py --abuse; these tests check the order in
which things finish, which does not depend on the machine's speed."""
import time
from pathlib import Path

import av
import numpy as np
import pytest
from app_helpers import TINY, feat_clip, wait_for
from gradio_client import handle_file
from llm_server import ScriptedLLM
from test_security import client, error_of, launch, official_rows

EVAL_CLIPS = 48  # the attacker's evaluation set: distinct files, so none comes from the embedding cache


@pytest.fixture(scope="module")
def operator():
    server = ScriptedLLM("hang")
    yield server
    server.close()


@pytest.fixture(scope="module")
def public_app(operator, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    demo, url = launch("public", mp, tmp_path_factory.mktemp("fair"), OPENAI_API_KEY="sk-operator",
                       OPENAI_BASE_URL=operator.url, DFERCLIP_LLM_MODEL="m", DFERCLIP_LLM_DEADLINE_S="30",
                       DFERCLIP_MAX_EVAL_CLIPS=str(EVAL_CLIPS))
    yield url, demo
    operator.stop.set()
    demo.close()
    demo.ctx.close()
    mp.undo()


@pytest.fixture
def evaluation_set(tmp_path) -> list:
    """A labels CSV and EVAL_CLIPS copies of a real clip, each with its own trailing bytes: other digests, so
    no clip comes from the embedding cache (also not from another test's set)."""
    data = feat_clip("single_face.mp4").read_bytes()
    clips = []
    for i in range(EVAL_CLIPS):
        p = tmp_path / f"clip{i:02d}.mp4"
        p.write_bytes(data + str(tmp_path).encode() + bytes([i]) * (i + 1))
        clips.append(p)
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{p.name},happiness\n" for p in clips))
    return [handle_file(str(labels))] + [handle_file(str(p)) for p in clips]


def long_jobs(demo) -> dict:
    return demo.ctx.scheduler.snapshot()["long_jobs"]


def start_evaluation(c, demo, files):
    """Submit an evaluation set and wait until it computes (its clips uploaded)."""
    job = c.submit(TINY, files, api_name="/load_evaluation_set")
    wait_for(lambda: "evaluation set" in long_jobs(demo).values(), 120, "the evaluation set to start")
    return job


def predict(c):
    return c.predict(handle_file(str(feat_clip("single_face.mp4"))), TINY, api_name="/predict")


def test_an_honest_visitor_is_served_while_another_runs_a_long_job(public_app, evaluation_set):
    url, demo = public_app
    attacker, honest = client(url), client(url)
    predict(honest)  # the honest visitor's clip, and the model warm
    job = start_evaluation(attacker, demo, evaluation_set)
    t0 = time.monotonic()
    for _ in range(2):
        probs, *_ = predict(honest)
        assert abs(sum(p["confidence"] for p in probs["confidences"]) - 1) < 1e-4
    honest.predict(TINY, official_rows(edit=True), "mean-embedding", api_name="/rescore_descriptions")
    honest_s = time.monotonic() - t0
    assert not job.done(), f"the honest visitor waited for the long job ({honest_s:.1f} s)"
    result = job.result(timeout=300)  # the long job still finishes, whole
    assert f"Evaluation set: {EVAL_CLIPS} clips" in str(result)


def test_one_long_job_per_visitor_and_long_jobs_take_turns(public_app, evaluation_set, tmp_path):
    url, demo = public_app
    attacker, other = client(url), client(url)
    for c in (attacker, other):
        predict(c)
    job = start_evaluation(attacker, demo, evaluation_set)
    message = error_of(attacker.predict, TINY, "predicted class", api_name="/explain_expression")
    assert "your evaluation set is still running" in message
    small = tmp_path / "two.csv"
    small.write_text("clip00.mp4,happiness\nclip01.mp4,sadness\n")
    message = error_of(attacker.predict, TINY, [handle_file(str(small))] + evaluation_set[1:3],
                       api_name="/load_evaluation_set")
    assert "your evaluation set is still running" in message
    # another visitor's long job gets its turn between two pieces of the first one, not after it
    gallery, strip, note, data = other.predict(TINY, "predicted class", api_name="/explain_expression")
    assert gallery and not job.done()
    job.result(timeout=300)
    assert long_jobs(demo) == {}
    attacker.predict(TINY, "predicted class", api_name="/explain_expression")  # its turn is free again


def test_a_hanging_llm_server_holds_no_one(public_app, operator):
    url, demo = public_app
    waiting, other = client(url), client(url)
    before = len(operator.requests)
    job = waiting.submit(TINY, "dferclip", "", "", "", ["happiness"], 1, "replace", "system", "Describe {name}.",
                         "mean-embedding", "openai", "qwen2.5-0.5b-instruct", api_name="/generate_descriptions")
    wait_for(lambda: len(operator.requests) > before, 60, "the generation to reach the LLM server")
    predict(other)
    other.predict(TINY, "predicted class", api_name="/explain_expression")
    other.predict(TINY, official_rows(edit=True), "max", api_name="/rescore_descriptions")
    assert not job.done()  # all served while the generation waits for the server
    with pytest.raises(Exception, match="30 s deadline"):
        job.result(timeout=120)


def long_video(path: Path, seconds: int) -> Path:
    """A real H.264 file of ``seconds`` at 2 fps (small and quick to write)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=2)
        stream.width, stream.height, stream.pix_fmt = 96, 96, "yuv420p"
        for i in range(seconds * 2):
            frame = np.full((96, 96, 3), (i * 7) % 255, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def test_evaluation_sets_use_the_apps_limits_and_uploads_are_deleted(monkeypatch, tmp_path):
    uploads = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    demo, url = launch("public", monkeypatch, tmp_path, DFERCLIP_UPLOAD_MAX_AGE_S="3")
    try:
        c = client(url)
        over = long_video(tmp_path / "over-a-minute.mp4", 75)  # the app takes clips up to 60 s
        clip = tmp_path / "short.mp4"
        clip.write_bytes(feat_clip("single_face.mp4").read_bytes())
        labels = tmp_path / "labels.csv"
        labels.write_text("over-a-minute.mp4,happiness\nshort.mp4,sadness\n")
        out = c.predict(TINY, [handle_file(str(p)) for p in (labels, over, clip)], api_name="/load_evaluation_set")
        assert "Evaluation set: 1 clips" in str(out) and "1 clip(s) could not be read" in str(out)
        uploaded = [p for p in uploads.rglob("*.mp4") if p.name in ("over-a-minute.mp4", "short.mp4")]
        assert len(uploaded) == 2
        wait_for(lambda: not any(p.exists() for p in uploaded), 30, "the uploads to be deleted")
        assert [p for p in uploads.rglob("single_face.mp4")]  # the example clips stay
    finally:
        demo.close()
        demo.ctx.close()


def test_the_largest_re_score_is_a_long_job_that_gives_way(public_app, tmp_path):
    """100 classes x 50 descriptions x 1000 characters, all new: it runs (whole) as the visitor's long job, in
    pieces, while another visitor predicts."""
    import json

    from dferclip.text.descriptions import MAX_CLASSES, MAX_DESCRIPTIONS_PER_CLASS, MAX_TEXT_CHARS

    url, demo = public_app
    big, honest = client(url), client(url)
    predict(honest)
    names = [f"class {k}" for k in range(MAX_CLASSES)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"format": "dferclip.descriptions/1", "name": "big",
                                "classes": [{"name": n, "descriptions": [f"a face, {n}"]} for n in names]}))
    big.predict(TINY, handle_file(str(path)), "mean-embedding", api_name="/upload_descriptions")
    filler = ("raised cheeks, narrowed eyes and a tight mouth " * 40)[:MAX_TEXT_CHARS]
    rows = [[n, f"{k} {j} {filler}"[:MAX_TEXT_CHARS]] for k, n in enumerate(names)
            for j in range(MAX_DESCRIPTIONS_PER_CLASS)]
    job = big.submit(TINY, {"headers": ["class", "description"], "data": rows, "metadata": None},
                     "mean-embedding", api_name="/rescore_descriptions")
    wait_for(lambda: "re-score of many new descriptions" in long_jobs(demo).values(), 120,
             "the re-score to grow into a long job")
    probs, *_ = predict(honest)
    assert probs["confidences"] and not job.done()
    message = error_of(big.predict, TINY, "predicted class", api_name="/explain_expression")
    assert "re-score of many new descriptions is still running" in message
    out = job.result(timeout=600)  # scored whole: the last class is in the scores
    assert f"class {MAX_CLASSES - 1}" in str(out)
