"""Faults survived (issue 20): a full disk during a download, a conversion or a save; corrupt cache entries
(converted weights are in test_weights, compiled towers and embedding files here); a folder replace whose
second rename fails; a corpus resumed with another model; explain hooks installed by racing first calls; and
the app's downloads: in the background, only what the operator enabled, within a disk budget.

A full disk is a real one: a tmpfs of a few MB mounted for the test (root only; skipped elsewhere)."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_weights import ATOL, env, official, registry_file, server  # noqa: F401 (fixtures)

import dferclip
from dferclip import backends, explain, files
from dferclip.corpus import ClipRef, predict_corpus, read_records
from dferclip.errors import DataError, WeightsDownloadError, WeightsUnavailableError
from dferclip.runtime import ModelEntry, ModelRegistry
from dferclip.scoring import VideoEmbeddingCache
from dferclip.weights import fetch, published


# --- a small real disk ----------------------------------------------------------------------------------
class SmallDisk:
    """A tmpfs of ``size`` bytes mounted at ``path``; :meth:`resize` frees (or takes) space."""

    def __init__(self, path: Path, size: int):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'not root'})")

    def resize(self, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    disks = []

    def make(size: int, name: str = "disk") -> SmallDisk:
        disks.append(SmallDisk(tmp_path / name, size))
        return disks[-1]

    yield make
    for d in disks:
        d.close()


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a write left behind."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".old")) or ".old" in p.name)


# --- atomic folders -------------------------------------------------------------------------------------
def test_a_replace_whose_second_rename_fails_keeps_the_original_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("original")
    with pytest.raises(FileNotFoundError):
        with files.atomic_folder(target, overwrite=True) as tmp:
            (tmp / "weights").write_text("new")
            shutil.rmtree(tmp)  # the new folder is gone when it should be renamed in: that rename fails
    assert (target / "weights").read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_folder_set_aside_by_a_killed_replace_is_restored(tmp_path):
    """What a process killed between the two renames leaves: the original renamed aside, nothing in place."""
    target = tmp_path / "model"
    aside = tmp_path / ".model.abc123.old" / "model"
    aside.mkdir(parents=True)
    (aside / "weights").write_text("original")
    with pytest.raises(FileExistsError):  # restored first, so a plain write refuses to overwrite it
        with files.atomic_folder(target):
            pass
    assert (target / "weights").read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --- a full disk ----------------------------------------------------------------------------------------
def test_a_full_disk_during_a_save_leaves_nothing_half_written_and_keeps_the_old_model(small_disk, tiny_model):
    disk = small_disk(256 << 10)
    out = disk.path / "m"
    with pytest.raises(OSError) as info:
        dferclip.save_model(tiny_model, out)
    assert info.value.errno == 28  # ENOSPC
    assert sorted(os.listdir(disk.path)) == []
    disk.resize(64 << 20)
    dferclip.save_model(tiny_model, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    disk.resize(sum(len(b) for b in before.values()) + (256 << 10))  # room for the old copy, not a new one
    with pytest.raises(OSError):
        dferclip.save_model(tiny_model, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(disk.path)) == ["m"]
    assert dferclip.load_model(out).num_classes == tiny_model.num_classes


def test_a_full_disk_during_the_download_keeps_its_part_and_resumes(server, official, env, small_disk,  # noqa: F811
                                                                    monkeypatch):
    disk = small_disk(len(official[0]) // 2)
    monkeypatch.setenv("DFERCLIP_CACHE", str(disk.path))
    entry = published.get_entry("dfew-fold1")
    with pytest.raises(WeightsDownloadError, match="the disk is full.*resumes where it stopped") as info:
        fetch.ensure_cached(entry, retries=0, quiet=True)
    assert info.value.reason == "disk" and fetch.status("dfew-fold1").state == "failed"
    kept = sum(p.stat().st_size for p in (disk.path / "weights" / ".downloads").iterdir())
    assert kept > 0 and not published.is_cached(entry)
    disk.resize(4 * len(official[0]))  # space freed: the next try resumes and converts
    with torch.no_grad():
        assert (dferclip.load_model("dfew-fold1")(official[1]) - official[2]).abs().max() <= ATOL
    assert server.requests_for("/dfew-fold1.pth")[-1] == f"bytes={kept}-"
    assert leftovers(disk.path) == [] and list((disk.path / "weights" / ".downloads").iterdir()) == []


def test_a_full_disk_during_the_conversion_is_clear_and_the_next_try_heals(server, official, env,  # noqa: F811
                                                                            small_disk, monkeypatch):
    disk = small_disk(len(official[0]) + (2 << 20))  # the download fits, its converted copy does not
    monkeypatch.setenv("DFERCLIP_CACHE", str(disk.path))
    entry = published.get_entry("dfew-fold1")
    with pytest.raises(WeightsDownloadError, match="the disk is full .* while converting.*nothing was cached") as info:
        dferclip.load_model("dfew-fold1")
    assert info.value.reason == "disk"
    st = fetch.status("dfew-fold1")
    assert st.state == "failed" and "disk is full" in st.error  # not stuck at "verifying"
    assert not published.is_cached(entry) and leftovers(disk.path) == []
    assert list((disk.path / "weights" / ".downloads").iterdir()) == []  # not reused: downloaded again
    disk.resize(4 * len(official[0]))
    with torch.no_grad():
        assert (dferclip.load_model("dfew-fold1")(official[1]) - official[2]).abs().max() <= ATOL
    assert server.requests_for("/dfew-fold1.pth")[-1] is None  # a fresh download, not the old file
    assert fetch.status("dfew-fold1").state == "ready"


# --- the embedding cache --------------------------------------------------------------------------------
def _clip(model, seed=0):
    cfg = model.input_config
    g = torch.Generator().manual_seed(seed)
    return cfg.normalize(torch.rand(cfg.num_frames, 3, cfg.image_size, cfg.image_size, generator=g))


def test_a_corrupt_embedding_cache_file_is_replaced(tiny_model, tmp_path):
    video = _clip(tiny_model)
    first = VideoEmbeddingCache(folder=tmp_path)
    emb = first.get(tiny_model, video)
    (path,) = tmp_path.iterdir()
    good = path.read_bytes()
    for damage in (good[: len(good) // 2], good[:-16] + bytes(16)):  # cut short; the last values zeroed
        path.write_bytes(damage)
        cache = VideoEmbeddingCache(folder=tmp_path)
        again = cache.get(tiny_model, video)
        assert cache.encoded == 1  # not taken from the damaged file
        assert torch.allclose(again.learned, emb.learned, atol=1e-6)
        rewritten = load_file(str(path))  # a whole entry again
        assert torch.equal(rewritten["learned"], again.learned) and torch.equal(rewritten["zero_shot"],
                                                                                again.zero_shot)
    hit = VideoEmbeddingCache(folder=tmp_path)
    hit.get(tiny_model, video)
    assert hit.encoded == 0


def test_a_full_disk_costs_the_embedding_cache_entry_not_the_answer(tiny_model, small_disk, caplog):
    disk = small_disk(4096)
    (disk.path / "filler").write_bytes(b"\0" * 4096)  # full
    cache = VideoEmbeddingCache(folder=disk.path)
    emb = cache.get(tiny_model, _clip(tiny_model))
    assert emb.learned.dim() == 1 and abs(float(emb.learned.norm()) - 1) < 1e-4
    assert "cannot write" in caplog.text and sorted(os.listdir(disk.path)) == ["filler"]
    (disk.path / "filler").unlink()
    cache.get(tiny_model, _clip(tiny_model, seed=1))
    assert len([p for p in disk.path.iterdir() if p.suffix == ".safetensors"]) == 1


# --- a backend's compiled tower -------------------------------------------------------------------------
@pytest.fixture
def tiny_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DFERCLIP_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = dferclip.load_model("random:dferclip-tiny")
    model.weights_info = {"kind": "dferclip", "trained": True}  # a checkpoint's conversion is cached
    return dferclip.save_model(model, tmp_path / "tiny")


@pytest.mark.skipif("openvino" not in backends.installed(), reason="openvino not installed")
@pytest.mark.parametrize("damage", ["unreadable", "wrong values"])
def test_a_corrupt_compiled_tower_is_converted_again(tiny_dir, tmp_path, damage, caplog):
    model = dferclip.load_model(tiny_dir)
    assert backends.accelerate(model, "openvino").name == "openvino"
    (folder,) = (tmp_path / "cache" / "openvino").iterdir()
    xml, weights = folder / "tower.xml", folder / "tower.bin"
    good = xml.read_bytes(), weights.read_bytes()
    if damage == "unreadable":
        xml.write_bytes(good[0][: len(good[0]) // 3])
    else:
        weights.write_bytes(good[1][:64] + bytes(len(good[1]) - 64))  # same size, the values zeroed
    again = dferclip.load_model(tiny_dir)
    used = backends.accelerate(again, "openvino")
    assert used.name == "openvino" and used.max_logit_delta <= backends.FAITHFUL_ATOL
    assert "converting again" in caplog.text
    caplog.clear()  # the new conversion was kept: the next load reads it from the cache, faithfully
    used = backends.accelerate(dferclip.load_model(tiny_dir), "openvino")
    assert used.name == "openvino" and used.max_logit_delta <= backends.FAITHFUL_ATOL
    assert "converting again" not in caplog.text and [p.name for p in folder.parent.iterdir()] == [folder.name]


# --- corpus resume ----------------------------------------------------------------------------------------
def test_a_corpus_output_of_another_model_is_not_resumed(tmp_path, tiny_model):
    from app_helpers import feat_clip

    clips = [ClipRef(n, feat_clip(n)) for n in ("single_face.mp4", "no_face.mp4")]
    out = tmp_path / "preds.jsonl"
    predict_corpus(tiny_model, clips[:1], out, workers=0, progress=False)
    written = out.read_bytes()
    torch.manual_seed(1)
    other = dferclip.load_model("random:dferclip-tiny")
    with pytest.raises(DataError, match="another model.*mix two models"):
        predict_corpus(other, clips, out, workers=0, progress=False)
    assert out.read_bytes() == written
    summary = predict_corpus(tiny_model, clips, out, workers=0, progress=False)  # the same model resumes
    assert (summary.skipped, summary.done) == (1, 1)
    records = read_records(out)
    assert [r["clip"] for r in records] == ["single_face.mp4", "no_face.mp4"]
    assert len({r["model"] for r in records}) == 1
    part = out.with_name("preds.part1.jsonl")  # an interrupted sharded run's part, written by the other model
    part.write_text(json.dumps({"clip": "x.mp4", "model": "0123456789abcdef"}) + "\n")
    with pytest.raises(DataError, match="preds.part1.jsonl holds predictions of another model"):
        predict_corpus(tiny_model, clips + [ClipRef("x.mp4", feat_clip("no_face.mp4"))], out, workers=0,
                       progress=False)


# --- explain hooks ----------------------------------------------------------------------------------------
def test_explain_hooks_are_installed_once_when_first_calls_race():
    """8 threads make the first call on a fresh model at once, 5 times (unlocked, 3 of 5 got hooks twice)."""
    for _ in range(5):
        model = dferclip.load_model("random:dferclip-tiny")
        start = threading.Barrier(8)
        errors = []

        def first_call():
            try:
                start.wait()
                explain._install_hooks(model)
            except Exception as e:  # reported below
                errors.append(e)

        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible: a race shows
        try:
            threads = [threading.Thread(target=first_call) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(old)
        assert not errors
        attns = [m for m in model.clip.visual.transformer.modules() if isinstance(m, torch.nn.MultiheadAttention)]
        assert attns and all(len(m._forward_hooks) == 1 and len(m._forward_pre_hooks) == 1 for m in attns)


# --- the app's downloads ------------------------------------------------------------------------------------
def test_public_downloads_only_what_the_operator_enabled_within_the_disk_budget(server, env, monkeypatch):  # noqa: F811
    fold1, fold2 = published.get_entry("dfew-fold1"), published.get_entry("dfew-fold2")
    monkeypatch.delenv("DFERCLIP_PUBLIC_DOWNLOADS", raising=False)
    monkeypatch.delenv("DFERCLIP_WEIGHTS_DISK_BYTES", raising=False)
    assert fetch.public_downloads() == {"dfew-fold1"}  # the registry's default only
    refused = fetch.request(fold2, public=True)
    assert refused.state == "refused" and "has not enabled downloading it" in refused.error
    assert fetch.download_refusal(fold2, public=False) is None  # local mode: anything
    monkeypatch.setenv("DFERCLIP_PUBLIC_DOWNLOADS", "dfew-fold1, dfew-fold2")
    assert fetch.download_refusal(fold2, public=True) is None
    monkeypatch.setenv("DFERCLIP_WEIGHTS_DISK_BYTES", str(10 << 20))
    over = fetch.request(fold1, public=True)
    assert over.state == "refused" and "needs about" in over.error and "DFERCLIP_WEIGHTS_DISK_BYTES" in over.error
    assert server.requests == []  # nothing was fetched


def test_the_app_registry_downloads_in_the_background_and_keeps_serving(server, official, env,  # noqa: F811
                                                                         monkeypatch):
    monkeypatch.setenv("DFERCLIP_PUBLIC_DOWNLOADS", "dfew-fold1")
    server.gates["/dfew-fold1.pth"] = gate = threading.Event()
    registry = ModelRegistry([ModelEntry("random:dferclip-tiny", "tiny", "explicit"),
                              ModelEntry("dfew-fold1", "fold 1", "published"),
                              ModelEntry("dfew-fold2", "fold 2", "published")], dev="cpu", backend="eager",
                             public=True)
    try:
        tiny = registry.get("random:dferclip-tiny")
        with pytest.raises(WeightsUnavailableError, match="not enabled downloading"):
            registry.get("dfew-fold2")
        t0 = time.perf_counter()
        with pytest.raises(WeightsUnavailableError, match="downloading them started in the background"):
            registry.get("dfew-fold1")
        assert time.perf_counter() - t0 < 1.0
        assert server.halfway.wait(60)  # the download runs, held halfway by the server
        t0 = time.perf_counter()
        assert registry.get("random:dferclip-tiny") is tiny  # other models are served meanwhile
        with pytest.raises(WeightsUnavailableError, match="still downloading"):
            registry.get("dfew-fold1")
        assert time.perf_counter() - t0 < 1.0
        gate.set()
        end = time.monotonic() + 120
        while fetch.in_progress("dfew-fold1") and time.monotonic() < end:
            time.sleep(0.05)
        assert fetch.status("dfew-fold1").state == "ready"
        with torch.no_grad():
            assert (registry.get("dfew-fold1")(official[1]) - official[2]).abs().max() <= ATOL
        assert server.requests_for("/dfew-fold2.pth") == []
    finally:
        gate.set()
        registry.close()
