"""Descriptions without a key: the local backend with real tiny causal LMs that these tests build and train in
seconds, installed in a Hugging Face cache under a repo id and loaded through the registry exactly as the real
model is; the first-use download from a Hub served on 127.0.0.1, garbage replies, cancellation, and offline
start-up without a cache."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from dferclip import runtime  # here: timed checks must not pay for it
from dferclip.cli import main
from dferclip.errors import (
    LLMCancelledError,
    LLMConfigError,
    LLMConnectionError,
    LLMReplyError,
)
from dferclip.text import local_llm
from dferclip.text.descriptions import load_description_set
from dferclip.text.llm import LLMSettings, generate, visitor_settings
from dferclip.weights.hub import forget_reachability
from proof_local_llm import CLASSES, COMMIT, GARBAGE, REPLIES, SYSTEM, TEMPLATE, build_tiny_lm


def install_in_hub_cache(cache, repo_id: str, folder) -> None:
    """Lay ``folder`` out as huggingface_hub's cache does for ``repo_id`` at commit :data:`COMMIT`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


class FakeHub:
    """The part of the Hugging Face Hub API that ``snapshot_download`` uses, for model repos given as folders:
    the recursive tree listing and ``resolve`` (HEAD with the commit, ETag and size headers, then GET)."""

    def __init__(self, repos: dict):
        self.repos = repos  # repo id -> folder
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body: bool):
                path = unquote(urlparse(self.path).path)
                outer.requests.append((self.command, path))
                data, headers = outer.route(path)
                self.send_response(200 if data is not None else 404)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                if body and data:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def route(self, path: str):
        for repo_id, folder in self.repos.items():
            tree = f"/api/models/{repo_id}/tree/{COMMIT}"
            resolve = f"/{repo_id}/resolve/{COMMIT}/"
            if path == tree:
                files = [{"type": "file", "path": p.name, "size": p.stat().st_size,
                          "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in sorted(folder.iterdir())]
                return json.dumps(files).encode(), {"Content-Type": "application/json"}
            if path.startswith(resolve) and (folder / path[len(resolve):]).is_file():
                data = (folder / path[len(resolve):]).read_bytes()
                return data, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
        return None, {"X-Error-Code": "EntryNotFound"}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hub cache holding a describer and a garbage emitter, and a registry file naming them."""
    root = tmp_path_factory.mktemp("local-llm")
    cache = root / "hub"
    entries = {}
    for name, replies in (("tiny-describer", REPLIES), ("tiny-garbage", dict.fromkeys(CLASSES, GARBAGE))):
        build_tiny_lm(root / name, replies)
        repo_id = f"dferclip-test/{name}"
        install_in_hub_cache(cache, repo_id, root / name)
        entries[name] = {"repo_id": repo_id, "revision": COMMIT, "licence": "MIT", "download": "a few kB"}
    registry = root / "local_models.json"
    registry.write_text(json.dumps({"format": "dferclip.local-llms/1", "models": entries}))
    return {"cache": cache, "registry": registry, "folders": {f"dferclip-test/{n}": root / n for n in entries}}


@pytest.fixture
def local_env(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setenv("DFERCLIP_LOCAL_LLMS", str(hub["registry"]))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DFERCLIP_LLM_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    return hub


def local_settings(name="tiny-describer", **kw) -> LLMSettings:
    return LLMSettings(**{"backend": "local", "local_model": name, "temperature": 0.0, "max_new_tokens": 40, **kw})


def test_local_model_writes_parsed_checked_descriptions(local_env):
    seen = []
    gen = generate(CLASSES, "dferclip", settings=local_settings(), template=TEMPLATE,
                   progress=lambda i, n, c: seen.append((i, n, c)))
    assert seen == [(i, 7, c) for i, c in enumerate(CLASSES)]
    assert gen.classes == CLASSES
    assert gen.descriptions == [[REPLIES[c]] for c in CLASSES]
    assert gen.prompts == [TEMPLATE.format(name=c) for c in CLASSES]
    assert gen.replies == [REPLIES[c] for c in CLASSES]
    assert [f.kind for f in gen.flags[0][0]] == ["leak"] and "happy" in gen.flags[0][0][0].message
    assert all(not f for fl in gen.flags[1:] for f in fl)
    by = gen.provenance["generated_by"]
    assert (by["backend"], by["model"], by["revision"]) == ("local", "dferclip-test/tiny-describer", COMMIT)
    assert by["structured_output"] is False and by["system_prompt"] == SYSTEM and "base_url" not in by
    chat = local_llm.local_chat("tiny-describer")
    assert str(chat.model.device) == str(runtime.device())


def test_workbench_generates_with_the_local_default(local_env, tiny_model):
    from dferclip.workbench import Workbench

    wb = Workbench(tiny_model, tiny_model.descriptions)
    classes = wb.current.classes
    settings = LLMSettings.from_env(local_model="tiny-describer", temperature=0.0)  # no server: local
    assert settings.backend == "local"
    gen = wb.generate(only=classes[1:3], settings=settings, template=TEMPLATE)
    assert gen.classes == classes[1:3]
    for cls in classes[1:3]:
        assert wb.current.descriptions[classes.index(cls)] == [REPLIES[cls]]
    assert wb.current.descriptions[0] == wb.previous.descriptions[0]


def test_garbage_reply_is_the_same_clear_error_as_a_server_s(local_env):
    with pytest.raises(LLMReplyError, match="could not read descriptions from the model's reply"):
        generate(["anger"], settings=local_settings("tiny-garbage"), template=TEMPLATE)


def test_cancel_stops_between_classes_and_keeps_finished_ones(local_env):
    cancel = threading.Event()
    asked = []

    def progress(i, n, cls):
        asked.append(cls)
        if i == 3:
            cancel.set()

    with pytest.raises(LLMCancelledError, match="cancelled after 3 of 7 classes") as info:
        generate(CLASSES, settings=local_settings(), template=TEMPLATE, progress=progress, cancel=cancel)
    assert asked == CLASSES[:4]
    partial = info.value.partial
    assert partial.classes == CLASSES[:3]
    assert partial.descriptions == [[REPLIES[c]] for c in CLASSES[:3]]
    assert partial.provenance["generated_by"]["backend"] == "local"


def test_cancel_cuts_a_reply_within_a_token(local_env):
    chat = local_llm.local_chat("tiny-describer")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TEMPLATE.format(name="anger")}]
    assert chat.reply(messages, max_new_tokens=40) == REPLIES["anger"]
    cancel = threading.Event()
    cancel.set()
    assert chat.reply(messages, max_new_tokens=40, cancel=cancel) == REPLIES["anger"].split()[0]
    with chat._lock:  # another caller's generation holds the model: a cancelled caller stops waiting
        assert chat.reply(messages, max_new_tokens=40, cancel=cancel) == ""
    assert chat.reply(messages, max_new_tokens=2) == "lowered brows"


def test_a_reply_that_never_ends_is_cut_at_its_budget(local_env):
    chat = local_llm.local_chat("tiny-describer")
    config = chat.model.generation_config
    eos = config.eos_token_id
    # it now talks on after its answer: no end token, and its end token is never picked (a well-trained describer
    # would otherwise repeat it, which decodes to nothing)
    config.eos_token_id, config.suppress_tokens = None, [eos]
    try:
        gen = generate(["anger"], settings=local_settings(max_new_tokens=500), template=TEMPLATE, n=1)
    finally:
        config.eos_token_id, config.suppress_tokens = eos, None
    words = gen.replies[0].replace(",", " ,").replace(".", " .").split()
    assert gen.replies[0].startswith(REPLIES["anger"])
    assert len(REPLIES["anger"].split()) + 10 < len(words) <= local_llm.reply_budget(500, 1) == 64


def test_offline_without_cache_fails_fast_and_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("DFERCLIP_LOCAL_LLMS", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(LLMConnectionError) as info:
        generate(["anger"], settings=LLMSettings(backend="local"))  # the registered default: Qwen2.5-0.5B
    assert time.perf_counter() - t0 < 8.0  # fails fast (idle: under 2 s)
    message = str(info.value)
    assert "Qwen/Qwen2.5-0.5B-Instruct" in message and "offline" in message and "describe generate" in message
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("DFERCLIP_LOCAL_LLMS", raising=False)
    forget_reachability()
    try:
        t0 = time.perf_counter()
        with pytest.raises(LLMConnectionError, match="cannot be reached"):
            local_llm.local_chat()
        assert time.perf_counter() - t0 < 8.0  # fails fast (idle: under 2 s)
    finally:
        forget_reachability()


def test_backend_choice(monkeypatch, local_env):
    assert LLMSettings.from_env().backend == "local"  # no server configured: every visitor can generate
    assert LLMSettings.from_env(api_key="visitor-key").backend == "openai"
    assert LLMSettings.from_env(base_url="http://127.0.0.1:1/v1").backend == "openai"
    assert visitor_settings().backend == "local"  # an app visitor who types nothing
    assert visitor_settings("m", "http://127.0.0.1:1/v1", "visitor-key").backend == "openai"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    assert LLMSettings.from_env().backend == "openai"
    assert LLMSettings.from_env(backend="local").backend == "local"
    monkeypatch.setenv("DFERCLIP_LLM_BACKEND", "local")
    assert LLMSettings.from_env().backend == "local"
    monkeypatch.setenv("DFERCLIP_LLM_BACKEND", "llama")
    with pytest.raises(LLMConfigError, match="DFERCLIP_LLM_BACKEND"):
        LLMSettings.from_env()
    with pytest.raises(LLMConfigError, match="unknown local model 'org/any-repo'.*tiny-describer"):
        generate(["anger"], settings=local_settings("org/any-repo"))


def test_registry_names_a_permissive_half_billion_model():
    spec = local_llm.get_local_model()
    assert spec.repo_id == "Qwen/Qwen2.5-0.5B-Instruct" and spec.licence == "Apache-2.0"
    assert len(spec.revision) == 40 and 4e8 < spec.parameters < 6e8


def test_cli_generates_and_saves_with_a_local_model(local_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DFERCLIP_DESCRIPTIONS", str(tmp_path))
    code = main(["describe", "generate", "--classes", ",".join(CLASSES[3:5]), "--local-model", "tiny-describer",
                 "--prompt", TEMPLATE, "--temperature", "0", "--name", "from-local"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "local model tiny-describer (dferclip-test/tiny-describer)" in err
    ds = load_description_set("from-local", tmp_path)
    assert ds.classes == CLASSES[3:5] and ds.descriptions == [[REPLIES[c]] for c in CLASSES[3:5]]
    assert ds.provenance["generated_by"]["model"] == "dferclip-test/tiny-describer"
    assert main(["describe", "generate", "--classes", "anger", "--local-model", "tiny-garbage",
                 "--prompt", TEMPLATE, "--temperature", "0", "--name", "bad"]) == 2
    assert "could not read descriptions" in capsys.readouterr().err


def test_first_use_downloads_from_the_hub_then_works_offline(local_env, tmp_path, monkeypatch):
    """The real first run, in a fresh process (huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import):
    the snapshot comes from a Hub on 127.0.0.1 into an empty cache, without pickled weights; later runs are
    offline from that cache."""
    folder = local_env["folders"]["dferclip-test/tiny-describer"]
    shutil.copy(folder / "model.safetensors", folder / "pytorch_model.bin")  # a repo may also hold pickles
    server = FakeHub({"dferclip-test/tiny-describer": folder})
    cache = tmp_path / "hub"
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_ENDPOINT=server.url, HF_HUB_CACHE=str(cache),
               DFERCLIP_LOCAL_LLMS=str(local_env["registry"]), DFERCLIP_DESCRIPTIONS=str(tmp_path / "sets"),
               HF_HUB_DISABLE_XET="1", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    try:
        run = subprocess.run([sys.executable, "-m", "dferclip", "describe", "generate", "--classes", "fear",
                              "--local-model", "tiny-describer", "--prompt", TEMPLATE, "--temperature", "0",
                              "--name", "downloaded"], env=env, capture_output=True, text=True, timeout=300, check=False)
    finally:
        server.close()
        (folder / "pytorch_model.bin").unlink()
    assert run.returncode == 0, run.stderr
    assert "fear: " + REPLIES["fear"] in run.stdout
    fetched = {p.rsplit("/", 1)[-1] for m, p in server.requests if m == "GET" and "/resolve/" in p}
    assert "model.safetensors" in fetched and "tokenizer.json" in fetched and "config.json" in fetched
    assert "pytorch_model.bin" not in fetched
    snapshot = cache / "models--dferclip-test--tiny-describer" / "snapshots" / COMMIT
    assert (snapshot / "model.safetensors").is_file() and not (snapshot / "pytorch_model.bin").exists()

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # this process is offline (HF_HUB_OFFLINE=1): cache only
    local_llm._LOADED.clear()
    gen = generate(["fear"], settings=local_settings(), template=TEMPLATE)
    assert gen.descriptions == [[REPLIES["fear"]]]
