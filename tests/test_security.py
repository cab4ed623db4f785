"""Attacks on the running app as an anonymous visitor of a public Space would make them: the app is launched on
127.0.0.1 in public mode and driven with gradio_client, bypassing the page (docs/security.md)."""
import hashlib
import os
import json
import threading
from pathlib import Path

import pytest
from app_helpers import TINY, feat_clip, free_port
from gradio_client import Client, handle_file
from workbench_helpers import FakeOpenAI, completion

SECRET = "sk-server-secret-0123456789abcdef"
SHIPPED = Path(__file__).resolve().parent.parent / "descriptions"  # the shipped description sets
ROWS = {"headers": ["class", "description"], "metadata": None}


def official_rows(edit: bool = False) -> dict:
    data = json.loads((SHIPPED / "dferclip-official-dfew.json").read_text())
    rows = [[c["name"], d] for c in data["classes"] for d in c["descriptions"]]
    if edit:
        rows[0][1] = "a broad smile"
        rows.append([rows[1][0], "drooping mouth corners"])
    return {**ROWS, "data": rows}


def shipped_digest() -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(SHIPPED.glob("*.json")))).hexdigest()


def launch(mode: str, monkeypatch, tmp_path, **env):
    import app

    for k, v in {"DFERCLIP_DESCRIPTIONS": str(tmp_path / "descriptions"), "DFERCLIP_CACHE": str(tmp_path / "cache"),
                 **env}.items():
        monkeypatch.setenv(k, v)
    demo = app.build_demo(TINY, mode=mode)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.launch_kwargs(demo))
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def llm_servers():
    own, evil = FakeOpenAI(), FakeOpenAI()
    reply = completion('{"descriptions": ["a wide smile with raised cheeks"]}')
    own.respond = evil.respond = lambda body: (200, reply, 0)
    yield own, evil
    own.close()
    evil.close()


@pytest.fixture(scope="module")
def public_app(llm_servers, tmp_path_factory):
    own, _ = llm_servers
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("public")
    demo, url = launch("public", mp, tmp, OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=own.url, DFERCLIP_LLM_MODEL="m",
                       DFERCLIP_MAX_EVAL_CLIPS="3")
    yield url, tmp, demo
    demo.close()
    mp.undo()


def client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    return str(info.value)


def seen_keys(server: FakeOpenAI) -> list[str]:
    return [r["headers"].get("authorization", "") for r in server.requests]


def generate(c: Client, url: str = "", key: str = "", only=("happiness",), submit=False):
    call = c.submit if submit else c.predict
    return call(TINY, "dferclip", "m", url, key, list(only), 1, "replace", "system", "Describe {name}.",
                "mean-embedding", "openai", "qwen2.5-0.5b-instruct", api_name="/generate_descriptions")


# --- secrets ---------------------------------------------------------------------------------------
def test_the_server_key_never_goes_to_a_server_a_visitor_names(public_app, llm_servers, caplog):
    url, _, _ = public_app
    own, evil = llm_servers
    c = client(url)
    before_evil = len(evil.requests)
    message = error_of(generate, c, evil.url, "")  # a visitor's URL, no key of theirs
    assert "type the key" in message and SECRET not in message
    assert len(evil.requests) == before_evil  # nothing was sent there at all
    # with a key of their own the visitor's URL is still refused on a public app: it is the server's own network
    message = error_of(generate, c, evil.url, "visitor-key")
    assert "network" in message and len(evil.requests) == before_evil
    # credentials in a URL are never echoed back
    message = error_of(generate, c, evil.url.replace("http://", "http://admin:hunter2@"), "")
    assert "hunter2" not in message and "admin" not in message
    # the app's own server gets the app's key: the feature works, the key stays where it belongs
    generate(c)
    assert seen_keys(own)[-1] == f"Bearer {SECRET}"
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_a_visitor_key_goes_only_to_the_visitors_server(llm_servers, monkeypatch, tmp_path):
    own, evil = llm_servers
    demo, url = launch("local", monkeypatch, tmp_path, OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=own.url,
                       DFERCLIP_LLM_MODEL="m")
    try:
        c = client(url)
        n_own = len(own.requests)
        assert "type the key" in error_of(generate, c, evil.url, "")
        table = generate(c, evil.url, "visitor-key")[0]
        assert any("raised cheeks" in row[1] for row in table["data"])
        assert seen_keys(evil) and set(seen_keys(evil)) == {"Bearer visitor-key"}
        assert len(own.requests) == n_own
        download = c.predict(TINY, api_name="/download_descriptions")
        text = Path(download["path"]).read_text()
        assert SECRET not in text and "visitor-key" not in text and evil.url.rsplit(":", 1)[1] in text
    finally:
        demo.close()


# --- shared files and other visitors' work ------------------------------------------------------------
def test_shipped_sets_cannot_be_overwritten(public_app):
    url, tmp, _ = public_app
    digest = shipped_digest()
    c = client(url)
    for name in ("class_sets", "dferclip-official-dfew", "dferclip-official-mafw"):
        assert "shipped" in error_of(c.predict, TINY, name, api_name="/save_descriptions")
    assert shipped_digest() == digest
    import dferclip

    assert dferclip.load_model("random:dferclip-tiny").num_classes == 7  # class sets still load


def test_a_public_save_stays_in_the_visitors_session(public_app):
    url, tmp, _ = public_app
    a, b = client(url), client(url)
    status = a.predict(TINY, "my-set", api_name="/save_descriptions")[0]
    assert "in this session" in status
    assert not (tmp / "descriptions").exists() or not any((tmp / "descriptions").iterdir())
    assert "No differences" in a.predict(TINY, "my-set", "current", api_name="/diff_descriptions")
    refused = error_of(b.predict, TINY, "my-set", "current", api_name="/diff_descriptions")
    assert "no description set 'my-set'" in refused or "not in the list of choices" in refused
    # a second save of the same name in the session is a new version, not a loss
    assert "version 2" in a.predict(TINY, "my-set", api_name="/save_descriptions")[0]


@pytest.mark.parametrize("name", ["../evil", "../../tmp/x", "/tmp/evil", "a/b", "..", ".hidden", "x" * 300,
                                  "ok\x00.json"])
def test_path_traversal_in_names(public_app, name):
    url, tmp, _ = public_app
    c = client(url)
    assert "invalid" in error_of(c.predict, TINY, name, api_name="/save_descriptions")
    refused = error_of(c.predict, TINY, name, "current", api_name="/diff_descriptions")
    assert "invalid" in refused or "not in the list of choices" in refused
    assert not Path("/tmp/evil").exists() and not (tmp / "evil").exists()


def test_a_private_event_cannot_read_a_server_file_either(public_app, tmp_path):
    url, _, demo = public_app
    secret_set = tmp_path / "server-only.json"
    secret_set.write_text(json.dumps({"format": "dferclip.descriptions/1", "name": "server-only",
                                      "classes": [{"name": "a", "descriptions": ["server secret text"]}]}))
    c = client(url)
    start = next(i for i, d in enumerate(c.config["dependencies"]) if d.get("api_name") == "start")
    for value in (str(secret_set), "../" * 8 + str(secret_set)[1:]):
        try:
            out = c.predict(TINY, "DFEW", "", value, "mean-embedding", fn_index=start)
        except Exception as e:  # refused: by gradio (a private event) or by the app (not a name)
            assert "server secret text" not in str(e)
        else:
            assert "server secret text" not in json.dumps(out)


# --- server paths ----------------------------------------------------------------------------------
def test_the_public_api_takes_no_server_path(public_app):
    url, _, _ = public_app
    api = client(url).view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in api["/load_evaluation_set"]["parameters"]] == ["model_key", "files"]


def test_an_uploaded_csv_may_only_name_uploaded_clips(public_app, tmp_path):
    url, _, _ = public_app
    c = client(url)
    clip = feat_clip("single_face.mp4")
    messages = []
    for target in (str(clip), "/etc/hostname", "/no/such/file.mp4", "../single_face.mp4"):
        labels = tmp_path / "labels.csv"
        labels.write_text(f"path,label\n{target},happiness\n")
        messages.append(error_of(c.predict, TINY, [handle_file(str(labels)), handle_file(str(clip))],
                                 api_name="/load_evaluation_set"))
    assert all("not one of the uploaded clips" in m for m in messages)
    # the message is the same whether the file exists on the server or not: it tells nothing about the disk
    assert len({m.split(":", 1)[1].split("'")[2] for m in messages}) == 1


def raw_call(url: str, api_name: str, data: list) -> str:
    """One call through Gradio's HTTP API without gradio_client (which would upload a local file itself):
    the server sees exactly ``data``; returns the event stream's text."""
    import urllib.request

    req = urllib.request.Request(f"{url}gradio_api/call/{api_name}", data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
    return urllib.request.urlopen(f"{url}gradio_api/call/{api_name}/{event}", timeout=120).read().decode()


def test_server_files_cannot_be_passed_as_uploads(public_app, tmp_path):
    url, _, _ = public_app
    server_file = tmp_path / "server-only.json"  # a valid set on the server's disk (in its temp folder)
    server_file.write_text(json.dumps({"format": "dferclip.descriptions/1", "name": "server-only",
                                       "classes": [{"name": "a", "descriptions": ["server secret text"]}]}))
    fake = {"path": str(server_file), "meta": {"_type": "gradio.FileData"}, "orig_name": "x.json"}
    stream = raw_call(url, "upload_descriptions", [TINY, fake, "mean-embedding"])
    assert "event: error" in stream and "server secret text" not in stream
    video = {"path": str(feat_clip("single_face.mp4")), "meta": {"_type": "gradio.FileData"}}
    stream = raw_call(url, "predict", [{"video": video, "subtitles": None}, TINY])
    assert "event: error" in stream and "confidences" not in stream
    # the same call with the file really uploaded works: the refusal is about where the file came from
    uploaded = client(url).predict(TINY, handle_file(str(server_file)), "mean-embedding",
                                   api_name="/upload_descriptions")
    assert "server secret text" in json.dumps(uploaded)


# --- oversized and malformed uploads -----------------------------------------------------------------
def _upload(c: Client, path: Path) -> str:
    return error_of(c.predict, TINY, handle_file(str(path)), "mean-embedding", api_name="/upload_descriptions")


def test_malformed_description_uploads_are_refused_clearly(public_app, tmp_path):
    url, _, _ = public_app
    c = client(url)
    big = tmp_path / "big.json"
    with open(big, "w") as f:
        f.write('{"format": "dferclip.descriptions/1", "name": "big", "classes": [{"name": "a", "descriptions": ["')
        f.write("x" * (50 << 20))
        f.write('"]}]}')
    assert "at most" in _upload(c, big)
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"format": "dferclip.descriptions/1", "name": "many",
                                "classes": [{"name": f"c{i}", "descriptions": ["d"]} for i in range(10_000)]}))
    assert "at most 100" in _upload(c, many)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"format": "dferclip.descriptions/1", "name": "x", "classes": [{"name": "caf\xe9"}]}')
    assert "UTF-8" in _upload(c, latin)
    for bad in ({"format": "dferclip.descriptions/1", "name": "t", "classes": "happiness"},
                {"format": "dferclip.descriptions/1", "name": "t", "classes": [{"name": 5, "descriptions": ["d"]}]},
                {"format": "dferclip.descriptions/1", "name": "t", "classes": [{"name": "a", "descriptions": 7}]},
                {"format": "dferclip.descriptions/1", "name": "../../x", "classes": [{"name": "a", "descriptions": ["d"]}]},
                {"format": "dferclip.descriptions/1", "name": "t", "version": "9",
                 "classes": [{"name": "a", "descriptions": ["d"]}]},
                [1, 2, 3]):
        typed = tmp_path / "typed.json"
        typed.write_text(json.dumps(bad))
        message = _upload(c, typed)
        assert any(w in message for w in ("malformed", "must be", "invalid", "not a description set")), message


def test_an_evaluation_set_is_bounded(public_app, tmp_path):
    url, _, _ = public_app
    c = client(url)
    clip = feat_clip("single_face.mp4")
    copies = []
    for i in range(4):
        p = tmp_path / f"clip{i}.mp4"
        p.write_bytes(clip.read_bytes())
        copies.append(p)
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{p.name},happiness\n" for p in copies))
    message = error_of(c.predict, TINY, [handle_file(str(labels))] + [handle_file(str(p)) for p in copies],
                       api_name="/load_evaluation_set")
    assert "at most 3" in message


def test_a_visitor_can_cancel_a_running_generation(public_app, llm_servers):
    import time

    url, _, _ = public_app
    own, _ = llm_servers
    slow = completion('{"descriptions": ["a wide smile"]}')
    own.respond = lambda body: (200, slow, 1.5)
    try:
        a, b = client(url), client(url)
        classes = ("happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear")
        before = len(own.requests)
        job = generate(a, only=classes, submit=True)
        time.sleep(2.0)
        assert "No generation is running" in b.predict(api_name="/cancel_generation")  # b cancels nothing of a's
        assert "Cancelling" in a.predict(api_name="/cancel_generation")
        with pytest.raises(Exception, match="ancel"):
            job.result(timeout=60)
        assert len(own.requests) - before < len(classes)  # stopped before asking for every class
    finally:
        own.respond = lambda body: (200, completion('{"descriptions": ["a wide smile with raised cheeks"]}'), 0)


def test_llm_requests_are_rate_limited_per_visitor(llm_servers, monkeypatch, tmp_path):
    own, _ = llm_servers
    demo, url = launch("public", monkeypatch, tmp_path, OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=own.url,
                       DFERCLIP_LLM_MODEL="m", DFERCLIP_LLM_PER_MINUTE="2")
    try:
        a, b = client(url), client(url)
        generate(a)
        generate(a)
        assert "too many LLM requests" in error_of(generate, a)
        generate(b)  # another visitor is not held back by the first one
    finally:
        demo.close()


# --- two visitors at once ----------------------------------------------------------------------------
def _scores(out) -> list:
    table = next(o for o in out if isinstance(o, dict) and "headers" in o and "zero-shot %" in o["headers"])
    return table["data"]


def test_two_visitors_at_once_do_not_disturb_each_other(public_app):
    url, _, _ = public_app
    a, b = client(url), client(url)
    clip = handle_file(str(feat_clip("single_face.mp4")))
    a.predict(clip, TINY, api_name="/predict")
    rows = official_rows(edit=True)
    alone = _scores(a.predict(TINY, official_rows(), "mean-embedding", api_name="/rescore_descriptions"))
    b.predict(clip, TINY, api_name="/predict")
    stop, errors = threading.Event(), []

    def other_visitor():
        try:
            while not stop.is_set():
                b.predict("random", api_name="/select_model")
                b.predict(TINY, rows, "max", api_name="/rescore_descriptions")
                b.predict(TINY, api_name="/select_model")
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    t = threading.Thread(target=other_visitor)
    t.start()
    try:
        during = [_scores(a.predict(TINY, official_rows(), "mean-embedding", api_name="/rescore_descriptions"))
                  for _ in range(3)]
    finally:
        stop.set()
        t.join(timeout=120)
    assert not errors, errors
    assert all(d == alone for d in during)


def test_a_visitor_opening_session_after_session_cannot_fill_the_servers_memory(monkeypatch, tmp_path):
    """Each session keeps its clip in memory: at most DFERCLIP_MAX_SESSIONS sessions are kept (the least recently
    used go first), and a kept clip holds its frames, not the sliding windows' model input."""
    from dferclip.ui.context import ClipRecord

    demo, url = launch("public", monkeypatch, tmp_path, DFERCLIP_MAX_SESSIONS="3")
    try:
        clip = handle_file(str(feat_clip("single_face.mp4")))
        visitors = [client(url) for _ in range(5)]
        for v in visitors:
            v.predict(clip, TINY, api_name="/predict")
        assert "predict one" in error_of(visitors[0].predict, TINY, "predicted class", api_name="/explain_expression")
        visitors[-1].predict(TINY, "predicted class", api_name="/explain_expression")  # the latest keep theirs
        sessions = list(demo.state_holder.session_data.values())
        records = [v for s in sessions for v in s.state_data.values() if isinstance(v, ClipRecord)]
        # kept: the fourth and fifth visitors' sessions, and the first's new, empty one (which pushed out the third)
        assert len(sessions) == 3 and len(records) == 2
        for r in records:
            assert r.ingest.windows is not None and len(r.ingest.windows.windows) > 1  # the clip has a timeline
            assert r.ingest.windows.video.numel() == 0 and r.prediction.ingest is r.ingest
            assert r.video.shape[1] == 16 and len(r.prediction.timeline) == len(r.ingest.windows.windows)
    finally:
        demo.close()


def test_sixteen_visitors_at_once(monkeypatch):
    """A short run of benchmarks/bench_load.py (the benchmark runs a minute): no error, nothing lost."""
    from benchmarks.bench_load import run_load

    for k in ("DFERCLIP_CHECKPOINTS", "DFERCLIP_CACHE", "DFERCLIP_DESCRIPTIONS"):
        monkeypatch.setenv(k, os.environ.get(k, ""))  # run_load sets them; restored afterwards
    r = run_load(str(feat_clip("single_face.mp4")), clients=16, seconds=12)
    assert r["errors"] == [] and r["lost"] == 0 and r["completed"] >= 16
    assert all(v["n"] > 0 for v in r["per_op"].values())
