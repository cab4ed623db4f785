"""Published weights by name: fetched over a real HTTP server on 127.0.0.1 (the mirror), verified, converted,
cached, served offline; the CLI verbs; the app's default, banner and dropdown.

The "published" file is a full official-format checkpoint built from the conformance fixture (a reduced
ViT-B/32 written by the official code); the test registry describes its architecture."""
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from app_helpers import wait_for
from weights_server import DRIVE_QUOTA_PAGE, DRIVE_VIRUS_SCAN_PAGE, WeightsServer

import dferclip
from dferclip.errors import (
    CheckpointError,
    WeightsDownloadError,
    WeightsUnavailableError,
)
from dferclip.weights import fetch, published
from dferclip.weights.formats import (
    RecorderMeter,
    infer_official_config,
    read_official,
)

ROOT = Path(__file__).resolve().parent.parent
ATOL = 1e-4


@pytest.fixture(scope="module")
def official(conformance_path):
    """(bytes of an official-format checkpoint without the fixture's extras, the fixture's input and logits)."""
    ck = read_official(conformance_path)
    fx = ck.pop("conformance")
    return _checkpoint_bytes(ck), fx["input"], fx["logits"], ck["state_dict"]


@pytest.fixture(scope="module")
def registry_file(official, tmp_path_factory):
    """A registry whose entries use the fixture's architecture (and one that does not fit it)."""
    folder = tmp_path_factory.mktemp("registry")
    arch = folder / "fixture-arch.json"
    sd = {k.removeprefix("module."): v for k, v in official[3].items()}
    arch.write_text(json.dumps(infer_official_config(sd).to_dict()))
    base = json.loads(published.REGISTRY_FILE.read_text())
    by_name = {e["name"]: e for e in base["entries"]}
    entries = [dict(by_name["dfew-fold1"], config=str(arch)), dict(by_name["dfew-fold2"], config=str(arch)),
               dict(by_name["mafw-fold1"], config=str(arch)),
               dict(by_name["dfew-fold3"], name="tiny-mismatch", config="dferclip-tiny"),
               by_name["clip-vit-b-32-openai"]]
    path = folder / "published.json"
    path.write_text(json.dumps(dict(base, entries=entries)))
    return path


@pytest.fixture
def env(registry_file, tmp_path, monkeypatch):
    """Online (the Hub endpoint is a closed local port), the test registry, an empty cache."""
    from app_helpers import free_port

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("DFERCLIP_PUBLISHED", str(registry_file))
    monkeypatch.setenv("DFERCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # no checkpoints/ folder
    return tmp_path / "cache"


@pytest.fixture
def server(official, env, monkeypatch):
    with WeightsServer() as srv:
        for name in ("dfew-fold1", "dfew-fold2", "mafw-fold1", "tiny-mismatch"):
            srv.files[f"/{name}.pth"] = official[0]
        monkeypatch.setenv("DFERCLIP_WEIGHTS_MIRROR", srv.url)
        yield srv


def assert_nothing_cached(cache: Path, name: str):
    assert not (cache / "weights" / name).exists()
    assert not published.is_cached(published.get_entry(name))
    assert not [p for p in (cache / "weights").glob(".*.tmp")]


# --- the library path --------------------------------------------------------------------------------
def test_download_verify_convert_cache_then_offline(server, official, env, monkeypatch):
    model = dferclip.load_model("dfew-fold1")
    with torch.no_grad():
        assert (model(official[1]) - official[2]).abs().max() <= ATOL
    info = model.weights_info
    assert info["kind"] == "published" and info["published"] == "dfew-fold1" and info["dataset"] == "DFEW"
    assert info["fold"] == 1 and info["trained"] and "zengqunzhao/DFER-CLIP" in info["origin"]
    assert model.class_names[:2] == ["happiness", "sadness"] and model.num_classes == 7
    folder = env / "weights" / "dfew-fold1"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    saved = json.loads((folder / "config.json").read_text())["weights"]["file"]
    assert saved["size"] == len(official[0]) and len(saved["sha256"]) == 64
    assert list((env / "weights" / ".downloads").iterdir()) == []  # the pickle is gone, no .part left
    assert server.requests_for("/dfew-fold1.pth") == [None]

    # from now on: from the cache, offline too, without a request
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    again = dferclip.load_model("dfew-fold1")
    assert time.perf_counter() - t0 < 10
    with torch.no_grad():
        assert torch.equal(again(official[1]), model(official[1]))
    assert len(server.requests) == 1


def test_resumes_after_the_connection_drops_halfway(server, official, env):
    server.drops["/dfew-fold1.pth"] = 1
    model = dferclip.load_model("dfew-fold1")
    first, second = server.requests_for("/dfew-fold1.pth")
    assert first is None and second is not None
    offset = int(second.removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= len(official[0]) // 2 + 1  # continued where the body stopped, not from 0
    with torch.no_grad():
        assert (model(official[1]) - official[2]).abs().max() <= ATOL


def test_an_interrupted_run_leaves_only_a_part_file_that_the_next_run_resumes(server, official, env):
    entry = published.get_entry("dfew-fold1")
    server.drops["/dfew-fold1.pth"] = 1
    with pytest.raises(WeightsDownloadError, match="interrupted.*resumes") as info:
        fetch.ensure_cached(entry, retries=0, quiet=True)
    assert info.value.reason == "interrupted"
    parts = list((env / "weights" / ".downloads").iterdir())
    kept = parts[0].stat().st_size
    assert len(parts) == 1 and parts[0].suffix == ".part" and 0 < kept < len(official[0])
    assert_nothing_cached(env, "dfew-fold1")
    model = dferclip.load_model("dfew-fold1")  # the next run
    assert server.requests_for("/dfew-fold1.pth")[-1] == f"bytes={kept}-"
    with torch.no_grad():
        assert (model(official[1]) - official[2]).abs().max() <= ATOL
    assert list((env / "weights" / ".downloads").iterdir()) == []


@pytest.mark.parametrize("page, reason", [(DRIVE_QUOTA_PAGE, "quota"), (DRIVE_VIRUS_SCAN_PAGE, "virus-scan")])
def test_a_drive_page_instead_of_the_file_is_a_clear_error(server, env, page, reason):
    server.files.pop("/dfew-fold1.pth")
    server.pages["/dfew-fold1.pth"] = page
    with pytest.raises(WeightsDownloadError, match="nothing was cached") as info:
        dferclip.load_model("dfew-fold1")
    assert info.value.reason == reason
    assert "weights download dfew-fold1 --file" in str(info.value)
    assert_nothing_cached(env, "dfew-fold1")
    assert list((env / "weights" / ".downloads").iterdir()) == []


def test_what_gdown_reports_for_drive_pages_is_named(registry_file, monkeypatch):
    """On Drive itself gdown raises FileURLRetrievalError with the page's text: each kind gets its own advice."""
    monkeypatch.setenv("DFERCLIP_PUBLISHED", str(registry_file))
    monkeypatch.delenv("DFERCLIP_WEIGHTS_MIRROR", raising=False)
    entry = published.get_entry("dfew-fold1")
    permission = ("Failed to retrieve file url: Cannot retrieve the public link of the file. You may need to change "
                  "the permission to 'Anyone with the link', or have had many accesses.")
    quota = "Too many users have viewed or downloaded this file recently. Please try accessing the file again later."
    for text, reason in ((permission, "permission"), (quota, "quota")):
        err = fetch.page_error(entry, text, fetch.download_url(entry))
        assert err.reason == reason and f"drive.google.com/file/d/{entry.host['drive']}/view" in str(err)


def test_a_missing_file_on_the_mirror_is_a_clear_error(server, env):
    server.files.pop("/dfew-fold1.pth")
    with pytest.raises(WeightsDownloadError, match="HTTP 404") as info:
        dferclip.load_model("dfew-fold1")
    assert info.value.reason == "http"
    assert_nothing_cached(env, "dfew-fold1")


def test_a_truncated_file_is_refused_and_deleted(server, official, env):
    server.files["/dfew-fold1.pth"] = official[0][: len(official[0]) * 2 // 3]  # served whole, but cut
    with pytest.raises(CheckpointError, match="truncated|not a PyTorch checkpoint|cannot read"):
        dferclip.load_model("dfew-fold1")
    assert_nothing_cached(env, "dfew-fold1")
    assert list((env / "weights" / ".downloads").iterdir()) == []
    server.files["/dfew-fold1.pth"] = official[0]  # a later run starts afresh and succeeds
    assert dferclip.load_model("dfew-fold1").weights_info["published"] == "dfew-fold1"


def test_tensors_that_do_not_fit_the_entry_are_refused(server, env):
    with pytest.raises(CheckpointError, match="do not fit dferclip-tiny: .*vision width 192 \\(expected 64\\)"):
        dferclip.load_model("tiny-mismatch")
    with pytest.raises(CheckpointError, match="7 classes \\(expected 11, MAFW\\)"):
        dferclip.load_model("mafw-fold1")
    for name in ("tiny-mismatch", "mafw-fold1"):
        assert_nothing_cached(env, name)
    assert list((env / "weights" / ".downloads").iterdir()) == []


# --- integrity: pinned hashes, trust on first use; credentials; downloads that fail midway --------------
def _checkpoint_bytes(ck: dict) -> bytes:
    """The checkpoint pickled as the official script writes it: RecorderMeter as __main__.RecorderMeter."""
    main = sys.modules["__main__"]
    had = hasattr(main, "RecorderMeter")
    main.RecorderMeter = RecorderMeter
    try:
        buf = io.BytesIO()
        torch.save(ck, buf)
    finally:
        if not had:
            del main.RecorderMeter
    return buf.getvalue()


@pytest.fixture(scope="module")
def other_checkpoint(official, tmp_path_factory):
    """A second valid official-format checkpoint of the same architecture: one tensor nudged."""
    path = tmp_path_factory.mktemp("other") / "x.pth"
    path.write_bytes(official[0])
    ck = read_official(path)
    key = next(k for k in ck["state_dict"] if k.endswith("prompt_learner.ctx"))
    ck["state_dict"][key] = ck["state_dict"][key] + 0.01
    return _checkpoint_bytes(ck)


def _registry_with(registry_file: Path, folder: Path, **changes) -> Path:
    """The test registry with dfew-fold1's fields changed (e.g. a pinned sha256 and size)."""
    data = json.loads(registry_file.read_text())
    for e in data["entries"]:
        if e["name"] == "dfew-fold1":
            e.update(changes)
    path = folder / "pinned.json"
    path.write_text(json.dumps(data))
    return path


def test_a_pinned_sha256_and_size_install_and_a_wrong_pin_is_refused(server, official, env, tmp_path, monkeypatch,
                                                                      registry_file):
    import hashlib

    real = {"sha256": hashlib.sha256(official[0]).hexdigest(), "size": len(official[0])}
    monkeypatch.setenv("DFERCLIP_PUBLISHED", str(_registry_with(registry_file, tmp_path, **real)))
    assert dferclip.load_model("dfew-fold1").weights_info["file"]["sha256"] == real["sha256"]

    fetch.forget_converted(published.get_entry("dfew-fold1"), "test")
    wrong = dict(real, sha256="0" * 64)
    (tmp_path / "wrong").mkdir()
    monkeypatch.setenv("DFERCLIP_PUBLISHED", str(_registry_with(registry_file, tmp_path / "wrong", **wrong)))
    with pytest.raises(CheckpointError, match="differs from the hash pinned in the published-weights registry: "
                                              f"sha256 {real['sha256']} \\(expected 0{{64}}\\)"):
        dferclip.load_model("dfew-fold1")
    assert_nothing_cached(env, "dfew-fold1")
    assert list((env / "weights" / ".downloads").iterdir()) == []
    assert fetch.status("dfew-fold1").state == "failed"


def test_a_pinned_hash_installs_a_file_that_came_without_one(official, env, tmp_path):
    """The Hub's path hands over a file without its sha256 (it used to be refused as "sha256 None differs")."""
    import hashlib

    entry = published.PublishedWeights.from_dict(dict(
        vars(published.get_entry("dfew-fold1")), name="hub-pickle", host={"hub": "someone/x", "file": "m.pth"},
        sha256=hashlib.sha256(official[0]).hexdigest(), size=len(official[0])))
    path = tmp_path / "m.pth"
    path.write_bytes(official[0])
    folder = fetch._install(entry, path, {"url": fetch.shown_url(entry)})
    saved = json.loads((folder / "config.json").read_text())["weights"]["file"]
    assert saved["sha256"] == entry.sha256 and saved["size"] == entry.size


def test_trust_on_first_use_refuses_a_later_different_file(server, official, other_checkpoint, env):
    import hashlib

    entry = published.get_entry("dfew-fold1")
    dferclip.load_model("dfew-fold1")
    known = json.loads(fetch.known_path(entry).read_text())
    assert known["sha256"] == hashlib.sha256(official[0]).hexdigest() and known["size"] == len(official[0])

    fetch.forget_converted(entry, "test")  # the cache is lost; the host now serves another (valid) file
    server.files["/dfew-fold1.pth"] = other_checkpoint
    with pytest.raises(CheckpointError, match="differs from the file first verified here on .*sha256 "
                                              f"{hashlib.sha256(other_checkpoint).hexdigest()}.*delete that record"):
        dferclip.load_model("dfew-fold1")
    assert_nothing_cached(env, "dfew-fold1")
    assert list((env / "weights" / ".downloads").iterdir()) == []
    assert json.loads(fetch.known_path(entry).read_text()) == known  # the record is not replaced
    server.files["/dfew-fold1.pth"] = official[0]  # the host serves the first file again: it installs
    with torch.no_grad():
        assert (dferclip.load_model("dfew-fold1")(official[1]) - official[2]).abs().max() <= ATOL


SECRET = "s3cret-pass"


def test_mirror_credentials_are_used_but_never_shown_or_stored(server, official, env, tmp_path, monkeypatch, capsys):
    import base64

    from dferclip.cli import main
    from dferclip.weights.push import build_folder

    monkeypatch.setenv("DFERCLIP_WEIGHTS_MIRROR", server.url.replace("http://", f"http://op:{SECRET}@"))
    entry = published.get_entry("dfew-fold1")
    server.files.pop("/dfew-fold1.pth")
    with pytest.raises(WeightsDownloadError) as missing:
        fetch.ensure_cached(entry, quiet=True)
    server.files["/dfew-fold1.pth"] = official[0]
    server.drops["/dfew-fold1.pth"] = 1
    with pytest.raises(WeightsDownloadError) as cut:
        fetch.ensure_cached(entry, retries=0, quiet=True)
    for err in (missing.value, cut.value):
        assert SECRET not in str(err) and "op:" not in str(err) and "127.0.0.1" in str(err)
    assert SECRET not in fetch.status("dfew-fold1").text

    assert main(["weights", "download", "dfew-fold1"]) == 0  # gdown's own output included
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err
    expected = "Basic " + base64.b64encode(f"op:{SECRET}".encode()).decode()
    assert set(server.authorizations) == {expected}  # every request carried the credentials
    stored = [p for p in (env / "weights").rglob("*") if p.is_file() and p.suffix == ".json"]
    assert stored and all(SECRET not in p.read_text() for p in stored)
    assert json.loads((env / "weights" / "dfew-fold1" / "config.json").read_text())["weights"]["file"]["url"] == (
        server.url + "/dfew-fold1.pth")

    # a cache converted by an older version kept the credentials: what is pushed does not
    cfg = env / "weights" / "dfew-fold1" / "config.json"
    info = json.loads(cfg.read_text())
    info["weights"]["file"]["url"] = server.url.replace("http://", f"http://op:{SECRET}@") + "/dfew-fold1.pth"
    cfg.write_text(json.dumps(info))
    out = build_folder(entry, tmp_path / "repo", "someone/x")
    assert all(SECRET not in p.read_text(errors="replace") for p in out.iterdir() if p.suffix in (".json", ".md"))


def test_a_download_cut_midway_again_and_again_keeps_its_part_and_heals_when_the_host_does(server, official, env):
    """The host cuts the next 4 responses halfway (gdown's first look at the file counts as one)."""
    entry = published.get_entry("dfew-fold1")
    server.drops["/dfew-fold1.pth"] = 4
    kept, failures = [0], 0
    while True:
        try:
            fetch.ensure_cached(entry, retries=0, quiet=True)
            break
        except WeightsDownloadError as e:
            failures += 1
            assert failures <= 4 and e.reason == "interrupted" and "resumes where it stopped" in str(e)
        assert fetch.status("dfew-fold1").state == "failed"
        assert_nothing_cached(env, "dfew-fold1")
        parts = list((env / "weights" / ".downloads").iterdir())
        assert len(parts) == 1 and parts[0].name.endswith(".part") and parts[0].stat().st_size > kept[-1]
        kept.append(parts[0].stat().st_size)
    assert failures >= 2 and server.drops["/dfew-fold1.pth"] == 0
    assert fetch.status("dfew-fold1").state == "ready"
    assert list((env / "weights" / ".downloads").iterdir()) == []
    with torch.no_grad():
        assert (dferclip.load_model("dfew-fold1")(official[1]) - official[2]).abs().max() <= ATOL


def test_a_corrupt_converted_folder_is_fetched_again(server, official, env):
    dferclip.load_model("dfew-fold1")
    weights = env / "weights" / "dfew-fold1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut short (a disk fault)
    with torch.no_grad():
        assert (dferclip.load_model("dfew-fold1")(official[1]) - official[2]).abs().max() <= ATOL
    assert len(server.requests_for("/dfew-fold1.pth")) == 2
    (env / "weights" / "dfew-fold1" / "config.json").write_text("{not json")
    assert dferclip.load_model("dfew-fold1").weights_info["published"] == "dfew-fold1"
    assert len(server.requests_for("/dfew-fold1.pth")) == 3


def test_offline_without_a_cache_fails_fast(env, monkeypatch):
    from app_helpers import free_port

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="not in the cache.*HF_HUB_OFFLINE"):
        dferclip.load_model("dfew-fold1")
    assert time.perf_counter() - t0 < 8  # fails fast: the retrying path takes about 20 s (idle: under 2 s)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online, but the host does not answer
    monkeypatch.setenv("DFERCLIP_WEIGHTS_MIRROR", f"http://127.0.0.1:{free_port()}")
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="cannot be reached"):
        dferclip.load_model("dfew-fold1")
    assert time.perf_counter() - t0 < 8  # fails fast: the retrying path takes about 20 s (idle: under 2 s)
    assert not (env / "weights" / "dfew-fold1").exists()


LOAD_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
import dferclip
model = dferclip.load_model(sys.argv[1])
print("loaded", model.weights_info["published"], model.num_classes, flush=True)
"""


@pytest.mark.slow  # two fresh Python processes importing torch
def test_two_processes_share_one_download(server, env, tmp_path):
    """Two processes start at once: the one that gets the lock downloads (held halfway by the server until the
    other says it waits), the other waits and then uses its result. One download; both load the weights."""
    import threading

    server.gates["/dfew-fold1.pth"] = gate = threading.Event()
    env_vars = dict(os.environ, PYTHONPATH=str(ROOT))
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT, "dfew-fold1"], env=env_vars, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=log.open("w"), text=True) for log in logs]
    try:
        wait_for(server.halfway.is_set, 120, "a download to reach halfway")
        wait_for(lambda: any("waiting for it to finish" in log.read_text() for log in logs), 120,
                 "the other process to wait")
        gate.set()
        outs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        gate.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [log.read_text()[-2000:] for log in logs]
    assert outs == ["loaded dfew-fold1 7\n"] * 2
    assert server.requests_for("/dfew-fold1.pth") == [None]  # one download
    assert published.is_cached(published.get_entry("dfew-fold1"))


# --- the command line ------------------------------------------------------------------------------------
def test_cli_list_download_info_and_push_folder(server, official, env, tmp_path, capsys, monkeypatch):
    import hashlib

    from dferclip.cli import main

    assert main(["weights", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["dfew-fold1"].endswith("no") and "MAFW fold 1 of 5" in rows["mafw-fold1"]
    assert main(["weights", "download", "dfew-fold1"]) == 0
    assert str(env / "weights" / "dfew-fold1") in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["dfew-fold1"].endswith(f"{len(official[0]) / 1e6:.0f} MB  yes") and rows["dfew-fold2"].endswith("no")
    assert main(["weights", "info", "dfew-fold1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cached"] and info["downloaded"]["sha256"] == hashlib.sha256(official[0]).hexdigest()
    assert info["classes"][0] == "happiness" and info["paper"]["uar"] == 59.61

    out = tmp_path / "repo"
    assert main(["weights", "push", "dfew-fold1", "someone/dfer-clip-dfew-fold1", "--folder", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\nlibrary_name: dferclip\n")
    for fact in ("DFER-CLIP, DFEW fold 1 of 5", "vision width 192", "0 happiness", "6 fear", "| 59.61 | 71.25 |",
                 "academic-request dataset", "zengqunzhao/DFER-CLIP", hashlib.sha256(official[0]).hexdigest(),
                 'dferclip.load_model("someone/dfer-clip-dfew-fold1")'):
        assert fact in card, fact
    with torch.no_grad():
        assert (dferclip.load_model(out)(official[1]) - official[2]).abs().max() <= ATOL
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a real upload needs the Hub: a clear error without it
    assert main(["weights", "push", "dfew-fold1", "someone/dfer-clip-dfew-fold1"]) == 2
    assert "Hugging Face Hub cannot be reached" in capsys.readouterr().err


def test_cli_download_from_a_file_fetched_by_hand(official, env, tmp_path, capsys, monkeypatch):
    from dferclip.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_hand = tmp_path / "DFEW-set1-model_best.pth"
    by_hand.write_bytes(official[0])
    assert main(["weights", "download", "dfew-fold1", "--file", str(by_hand)]) == 0
    assert by_hand.is_file() and published.is_cached(published.get_entry("dfew-fold1"))
    with torch.no_grad():
        assert (dferclip.load_model("dfew-fold1")(official[1]) - official[2]).abs().max() <= ATOL
    assert main(["weights", "info", "nope"]) == 2 and "no published weights called 'nope'" in capsys.readouterr().err


# --- the app ------------------------------------------------------------------------------------------------
class ServedApp:
    """app.build_demo() served on 127.0.0.1 and a gradio_client for it; ``build_s``: how long building took."""

    def __init__(self):
        from app_helpers import free_port
        from gradio_client import Client

        import app

        t0 = time.perf_counter()
        self.demo = app.build_demo()
        self.build_s = time.perf_counter() - t0
        port = free_port()
        self.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                         **app.launch_kwargs(self.demo))
        self.url = f"http://127.0.0.1:{port}/"
        self.client = Client(self.url, verbose=False, download_files=False)

    def dropdown(self) -> dict:
        """The model dropdown as a new page gets it: {key: label}, and its value."""
        import requests

        config = requests.get(self.url + "config", timeout=30).json()
        dd = next(c["props"] for c in config["components"] if c["props"].get("label") == "Model")
        return {key: label for label, key in dd["choices"]}, dd["value"]

    def weights_status(self) -> tuple[str, dict]:
        """(banner, dropdown update or None) from the page's download timer."""
        banner, dropdown, _timer = self.client.predict(api_name="/weights_status")
        return banner, dropdown if isinstance(dropdown, dict) else None

    def close(self):
        self.demo.close()
        self.demo.ctx.close()  # and its model registry's background conversions


@pytest.mark.slow  # two app builds, a download and a conversion
def test_app_downloads_in_the_background_then_switches_and_serves_from_the_cache(server, env, monkeypatch):
    from app_helpers import feat_clip

    server.gates["/dfew-fold1.pth"] = gate = __import__("threading").Event()
    served = ServedApp()  # starts at once: the download waits halfway on the server
    try:
        assert server.halfway.wait(60)
        choices, value = served.dropdown()
        assert value == "dfew-fold1"
        assert set(choices) >= {"dfew-fold1", "dfew-fold2", "mafw-fold1", "pretrained:dferclip-vit-b-32:openai"}
        assert "11 classes" in choices["mafw-fold1"] and choices["dfew-fold2"].endswith("not downloaded yet")
        banner, _ = served.weights_status()
        assert "Downloading the weights" in banner and "%" in banner and "DFEW fold 1 of 5" in banner
        with pytest.raises(Exception, match="still downloading"):  # a visitor who predicts now is told why
            served.client.predict(__import__("gradio_client").handle_file(str(feat_clip("single_face.mp4"))),
                                  "dfew-fold1", api_name="/predict")
        gate.set()
        wait_for(lambda: "Downloading" not in served.weights_status()[0], 120,
                 "the banner to switch")
        banner, dropdown = served.weights_status()
        assert dropdown["value"] == "dfew-fold1"
        assert {k: v for v, k in dropdown["choices"]}["dfew-fold1"].endswith("cached")
        for fact in ("DFER-CLIP, DFEW fold 1 of 5", "published weights", "zengqunzhao/DFER-CLIP",
                     "academic-request dataset", "UAR 59.61 / WAR 71.25", "7 classes:", "happiness"):
            assert fact in banner, fact
        assert "untrained" not in banner
    finally:
        gate.set()
        served.close()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline now, with the cache: the same weights, no request
    n = len(server.requests)
    served = ServedApp()
    try:
        choices, value = served.dropdown()
        assert value == "dfew-fold1" and choices["dfew-fold1"].endswith("cached")
        key, banner = served.client.predict("dfew-fold1", api_name="/select_model")
        assert key == "dfew-fold1" and "DFEW fold 1 of 5" in banner and "untrained" not in banner
    finally:
        served.close()
    assert len(server.requests) == n


def test_app_offline_without_a_cache(env, monkeypatch):
    from dferclip.runtime import find_models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    entries = find_models()
    assert time.perf_counter() - t0 < 8  # the whole check fails fast (idle: under 2 s; retrying: about 20 s)
    assert entries[0].key == "random"
    served = ServedApp()
    try:
        choices, value = served.dropdown()
        assert value == "random"
        assert all(choices[k].endswith("not downloaded yet") for k in ("dfew-fold1", "dfew-fold2", "mafw-fold1"))
        assert "11 classes" in choices["mafw-fold1"]
        key, banner = served.client.predict("mafw-fold1", api_name="/select_model")  # warns, keeps the model
        assert key == "random" and "untrained weights: predictions are meaningless" in banner
    finally:
        served.close()


@pytest.mark.slow  # an app build, a download and a conversion
def test_a_public_visitor_picking_uncached_weights_holds_nobody(server, env, monkeypatch):
    """Public mode: picking published weights not on the server answers at once and keeps the visitor's model
    while they download in the background; other visitors are served meanwhile; weights the operator did not
    enable are refused without a request; the banner says when the download is ready."""
    from gradio_client import Client, handle_file

    from app_helpers import feat_clip

    monkeypatch.setenv("DFERCLIP_MODE", "public")
    monkeypatch.setenv("DFERCLIP_MODEL", "random:dferclip-tiny")
    monkeypatch.setenv("DFERCLIP_PUBLIC_DOWNLOADS", "dfew-fold2")
    server.gates["/dfew-fold2.pth"] = gate = threading.Event()
    served = ServedApp()
    try:
        t0 = time.perf_counter()
        key, banner = served.client.predict("dfew-fold2", api_name="/select_model")
        picked_s = time.perf_counter() - t0
        assert key == "random:dferclip-tiny" and "Downloading the weights" in banner
        assert server.halfway.wait(60)  # the download runs, held halfway by the server
        other = Client(served.url, verbose=False, download_files=False)
        probs, *_ = other.predict(handle_file(str(feat_clip("single_face.mp4"))), "random:dferclip-tiny",
                                  api_name="/predict")
        assert abs(sum(p["confidence"] for p in probs["confidences"]) - 1) < 1e-4
        assert "Downloading the weights" in served.weights_status()[0]  # this visitor's timer follows it
        key, banner = served.client.predict("dfew-fold1", api_name="/select_model")  # not enabled here
        assert key == "random:dferclip-tiny" and server.requests_for("/dfew-fold1.pth") == []
        gate.set()
        wait_for(lambda: "is ready" in served.weights_status()[0], 120, "the banner to say the weights are ready")
        key, banner = served.client.predict("dfew-fold2", api_name="/select_model")
        assert key == "dfew-fold2" and "DFEW fold 2 of 5" in banner and "untrained" not in banner
    finally:
        gate.set()
        served.close()
    assert picked_s < 5  # a pick never waits for a download (about 0.1 s here)
