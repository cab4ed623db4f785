"""Published weights by name: fetched over a real HTTP server on 127.0.0.1 (the mirror), verified, converted,
cached, served offline; the CLI verbs; the app's default, banner and dropdown.

The "published" file is a full official-format checkpoint built from the conformance fixture (a reduced
ViT-B/32 written by the official code); the test registry describes its architecture."""
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from weights_server import DRIVE_QUOTA_PAGE, DRIVE_VIRUS_SCAN_PAGE, WeightsServer

import dferclip
from dferclip.errors import CheckpointError, WeightsDownloadError, WeightsUnavailableError
from dferclip.weights import fetch, published
from dferclip.weights.checkpoints import RecorderMeter, infer_official_config, read_official

ROOT = Path(__file__).resolve().parent.parent
ATOL = 1e-4


@pytest.fixture(scope="module")
def official(conformance_path):
    """(bytes of an official-format checkpoint without the fixture's extras, the fixture's input and logits)."""
    ck = read_official(conformance_path)
    fx = ck.pop("conformance")
    main = sys.modules["__main__"]
    had = hasattr(main, "RecorderMeter")
    main.RecorderMeter = RecorderMeter  # pickled as __main__.RecorderMeter, as the official script does
    try:
        buf = io.BytesIO()
        torch.save(ck, buf)
    finally:
        if not had:
            del main.RecorderMeter
    return buf.getvalue(), fx["input"], fx["logits"], ck["state_dict"]


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


def test_offline_without_a_cache_fails_fast(env, monkeypatch):
    from app_helpers import free_port

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="not in the cache.*HF_HUB_OFFLINE"):
        dferclip.load_model("dfew-fold1")
    assert time.perf_counter() - t0 < 2
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online, but the host does not answer
    monkeypatch.setenv("DFERCLIP_WEIGHTS_MIRROR", f"http://127.0.0.1:{free_port()}")
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="cannot be reached"):
        dferclip.load_model("dfew-fold1")
    assert time.perf_counter() - t0 < 2
    assert not (env / "weights" / "dfew-fold1").exists()
