"""Fetching published weights: download (gdown / huggingface_hub), verify, convert once, cache, serve offline.

:func:`ensure_cached` is what ``load_model("dfew-fold1")`` runs:

1. already converted in ``cache_dir()/weights/<name>/``: use it (no network);
2. the host (Google Drive, ``DFERCLIP_WEIGHTS_MIRROR`` or the Hub) cannot be reached, or ``HF_HUB_OFFLINE=1``:
   :class:`WeightsUnavailableError` within about 1.5 s;
3. otherwise, under a file lock (a second process waits, then uses the result), gdown downloads to a ``.part``
   file beside ``weights/.downloads/<name>.pth`` (resuming one left by an interrupted run) with a tqdm bar;
   a web page instead of the file (Drive's quota, virus-scan or permission pages) is recognised and reported
   with what to do; the file goes through the safe loader (weights-only unpickler and allow-list), must fit the
   entry's architecture and class set, is converted to ``model.safetensors`` + ``config.json`` in a temporary
   folder that is renamed into place in one step, and the pickle is deleted.

A failed download keeps only a ``.part`` file (which the next run resumes, and which nothing takes as weights);
a file that fails verification for any reason (a full disk while converting included) is deleted and the
status says "failed", so the next try downloads afresh. A converted folder that no longer loads is deleted
and fetched again (:func:`dferclip.weights.checkpoints.load_published`). ``DFERCLIP_WEIGHTS_MIRROR=URL``
downloads every Drive entry from ``URL/<name>.pth`` through the same code path; credentials in it
(``user:password@``) are sent but never shown or stored (:func:`shown_url`, :func:`scrub`).

Integrity: a ``size``/``sha256`` pinned in the registry must match; otherwise the size and sha256 of the file
first verified here are recorded (``weights/.known/<name>.json``, atomically) and a later download that
differs is refused (trust on first use; delete the record to accept a file the host replaced on purpose).

A public app calls :func:`request` (never blocks): only entries in ``DFERCLIP_PUBLIC_DOWNLOADS`` (default: the
app's default entry) download, within ``DFERCLIP_WEIGHTS_DISK_BYTES`` (default 6 GiB in public mode).
"""
from __future__ import annotations

import datetime
import errno
import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import get_config
from ..files import sha256_of, write_json
from ..errors import (
    CheckpointError,
    WeightsDownloadError,
    WeightsUnavailableError,
)
from ..text.descriptions import load_class_sets
from ..urls import redact_url
from . import hub
from .formats import CONFIG_FILE, WEIGHTS_FILE, load_official, save_model
from .published import PublishedWeights, cache_folder, default_name, is_cached, weights_root

log = logging.getLogger(__name__)

DRIVE_URL = "https://drive.google.com"


# --- is the host there? ----------------------------------------------------------------------
def offline_mode() -> bool:
    return hub.offline_mode()


def mirror() -> str | None:
    return os.environ.get("DFERCLIP_WEIGHTS_MIRROR", "").strip().rstrip("/") or None


def shown_url(entry: PublishedWeights) -> str:
    """:func:`download_url` without credentials or query string: the form every message and file gets."""
    return redact_url(download_url(entry))


def scrub(text: str) -> str:
    """``text`` with the mirror's credentials and any other ``user:password@`` in a URL removed."""
    m = mirror()
    if m:
        text = text.replace(m, redact_url(m))
    return re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@", r"\1", text)


def download_url(entry: PublishedWeights) -> str:
    """Where the entry's file comes from: the mirror's ``<name>.pth``, Drive, or the Hub. Can hold the mirror's
    credentials: show :func:`shown_url` instead."""
    kind = entry.host_kind
    if kind == "drive":
        m = mirror()
        return f"{m}/{entry.name}.pth" if m else f"{DRIVE_URL}/uc?id={entry.host['drive']}"
    if kind == "hub":
        return f"https://huggingface.co/{entry.host['hub']}"
    return "https://huggingface.co"


def host_reachable(entry: PublishedWeights) -> bool:
    """Whether the entry's host (Drive or its mirror, else the Hub) answers; remembered for a minute."""
    return hub.host_reachable(download_url(entry)) if entry.host_kind == "drive" else hub.hub_reachable()


# --- progress, for the app --------------------------------------------------------------------
@dataclass
class DownloadStatus:
    """How the fetch of one entry is going, in this process."""

    name: str
    state: str = "idle"  # idle | waiting | downloading | verifying | ready | failed | refused
    done: int = 0
    total: int | None = None
    error: str | None = None

    def update(self, done: int, total: int | None) -> None:
        self.state, self.done, self.total = "downloading", done, total

    @property
    def text(self) -> str:
        if self.state == "downloading":
            mb = f"{self.done / 1e6:.0f}"
            if self.total:
                return f"downloading: {100 * self.done / self.total:.0f} % ({mb} of {self.total / 1e6:.0f} MB)"
            return f"downloading: {mb} MB"
        return {"idle": "about to download", "waiting": "waiting for another process that is downloading it",
                "verifying": "verifying and converting", "ready": "ready",
                "failed": f"failed: {self.error}", "refused": f"refused: {self.error}"}[self.state]


_statuses: dict[str, DownloadStatus] = {}
_threads: dict[str, threading.Thread] = {}
_locks: dict[str, threading.Lock] = {}
_starting = threading.Lock()  # two visitors picking the same entry at once start one fetch


def status(name: str) -> DownloadStatus | None:
    """A snapshot of the fetch of ``name`` in this process, or None if none was started."""
    s = _statuses.get(name)
    return replace(s) if s else None


def in_progress(name: str) -> bool:
    """Whether a background fetch of ``name`` is running in this process."""
    t = _threads.get(name)
    return t is not None and t.is_alive()


def start_background(entry: PublishedWeights) -> DownloadStatus:
    """Fetch ``entry`` in a daemon thread (once); poll :func:`status`."""
    with _starting:
        if not in_progress(entry.name):
            _statuses[entry.name] = DownloadStatus(entry.name)

            def run():
                try:
                    ensure_cached(entry, quiet=True)
                except Exception as e:  # the status says "failed" and why
                    log.warning("fetching %s failed: %s", entry.name, scrub(str(e)))

            _threads[entry.name] = threading.Thread(target=run, name=f"fetch-{entry.name}", daemon=True)
            _threads[entry.name].start()
        return status(entry.name)


# --- Drive's web pages --------------------------------------------------------------------------
_PAGES = (  # reason, phrases (lower case), what happened
    ("quota", ("too many users have viewed or downloaded", "quota exceeded", "download quota"),
     "Google Drive refused the download: the file's download quota is exceeded (too many downloads lately)"),
    ("virus-scan", ("can't scan this file for viruses", "cannot scan this file for viruses", "virus scan warning",
                    "download-form", "download anyway"),
     "Google Drive answered with its virus-scan confirmation page instead of the file"),
    ("permission", ("you need access", "request access", "need permission", "servicelogin",
                    "cannot retrieve the public link", "access denied", "permission denied"),
     "Google Drive refused access: the file is not shared publicly, or access is denied"),
    ("not-found", ("does not exist", "file not found", "404"),
     "Google Drive says the file does not exist (deleted or moved)"),
)


def _looks_like_html(head: bytes) -> bool:
    h = head.lstrip().lower()
    return h.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")) or b"<html" in h[:2048]


def page_error(entry: PublishedWeights, text: str, url: str) -> WeightsDownloadError:
    """The typed error for a web page (or gdown's report of one) where the checkpoint was expected."""
    low = text.lower()
    reason, what = "html", "the server answered with a web page instead of the checkpoint"
    for r, phrases, message in _PAGES:
        if any(p in low for p in phrases):
            reason, what = r, message
            break
    page = f"{DRIVE_URL}/file/d/{entry.host['drive']}/view" if entry.host_kind == "drive" and not mirror() else url
    todo = {"quota": "Try again in a few hours (Drive resets quotas within a day)",
            "virus-scan": "Try again later",
            "not-found": "Check the entry's Drive id against the source",
            }.get(reason, "Check the address")
    return WeightsDownloadError(scrub(
        f"{entry.name}: {what}; nothing was cached. {todo}, or open {page} in a browser, save the file and run "
        f"`python -m dferclip weights download {entry.name} --file PATH`, or set DFERCLIP_WEIGHTS_MIRROR to a "
        "server that has it."), reason)


# --- download -------------------------------------------------------------------------------------
class _Sha256:
    """gdown's ``hasher``: hashes every byte (resumed bytes first) and counts them."""

    def __init__(self):
        self.h, self.n = hashlib.sha256(), 0

    def update(self, data: bytes) -> None:
        self.h.update(data)
        self.n += len(data)


def _partials(target: Path) -> list[Path]:
    return sorted(target.parent.glob(target.name + "*.part"))


def _drop(target: Path) -> None:
    for p in [target, *_partials(target)]:
        p.unlink(missing_ok=True)


def _download(entry: PublishedWeights, target: Path, st: DownloadStatus, retries: int, quiet: bool) -> dict:
    """Drive or mirror -> ``target`` (via a resumable ``.part``); returns what was downloaded (url, size, sha256)."""
    import gdown
    import requests
    from gdown.exceptions import DownloadCancelled, DownloadError, FileURLRetrievalError

    url, shown = download_url(entry), shown_url(entry)
    where = {"url": url} if mirror() else {"id": entry.host["drive"]}
    target.parent.mkdir(parents=True, exist_ok=True)
    sha = _Sha256()
    st.state = "downloading"
    try:
        # gdown prints the URL it downloads from: never one with credentials
        gdown.download(output=str(target), quiet=quiet or shown != url, resume=True, retries=retries,
                       timeout=(10, 60), progress=st.update, hasher=sha, **where)
    except FileURLRetrievalError as e:  # Drive answered with a page gdown could not get past
        _drop(target)
        raise page_error(entry, str(e), shown) from None
    except requests.HTTPError as e:
        _drop(target)
        code = e.response.status_code if e.response is not None else "?"
        raise WeightsDownloadError(f"{entry.name}: {shown} answered HTTP {code}; nothing was cached.", "http") from None
    except (DownloadError, DownloadCancelled, requests.RequestException, OSError) as e:
        kept = sum(p.stat().st_size for p in _partials(target))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise WeightsDownloadError(
                f"{entry.name}: the disk is full ({e.strerror}) after {kept / 1e6:.0f} MB of the download from "
                f"{shown}. Free some space (or raise the quota) and try again: it resumes where it stopped.",
                "disk") from None
        raise WeightsDownloadError(scrub(
            f"{entry.name}: the download from {shown} was interrupted after {kept / 1e6:.0f} MB "
            f"({str(e).splitlines()[0]}). Run the same command again: it resumes where it stopped."),
            "interrupted") from None
    if sha.n != target.stat().st_size:  # gdown found a finished file and skipped the transfer
        sha = _Sha256()
        with open(target, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    return {"url": shown, "size": sha.n, "sha256": sha.h.hexdigest()}


# --- verify and convert ---------------------------------------------------------------------------
def _arch_facts(config) -> dict:
    import open_clip

    clip = config.clip if isinstance(config.clip, dict) else open_clip.get_model_config(config.clip)
    if not clip:
        raise CheckpointError(f"unknown open_clip architecture {config.clip!r}")
    v, t = clip["vision_cfg"], clip["text_cfg"]
    return {"embedding width": clip["embed_dim"], "vision width": v["width"], "vision layers": v["layers"],
            "patch size": v["patch_size"], "image size": v["image_size"], "text width": t["width"],
            "text layers": t["layers"], "temporal layers": config.temporal.layers,
            "temporal width": config.temporal.heads * config.temporal.dim_head,
            "temporal MLP width": config.temporal.mlp_dim, "context tokens": config.prompt.n_ctx,
            "frames": config.input.num_frames}


def check_fits(model, entry: PublishedWeights) -> None:
    """The loaded checkpoint must have the entry's architecture and class count."""
    want, got = _arch_facts(get_config(entry.config)), _arch_facts(model.config)
    diffs = [f"{k} {got[k]} (expected {want[k]})" for k in want if got[k] != want[k]]
    classes = load_class_sets().get(entry.class_set)
    if classes is not None and model.num_classes != len(classes):
        diffs.append(f"{model.num_classes} classes (expected {len(classes)}, {entry.class_set})")
    if diffs:
        raise CheckpointError(f"{entry.name}: the file's tensors do not fit {entry.config}: " + ", ".join(diffs))


def _hash_file(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


# --- trust on first use: what a published file was when first verified here --------------------------
def known_path(entry: PublishedWeights) -> Path:
    return weights_root() / ".known" / f"{entry.name}.json"


def known_file(entry: PublishedWeights) -> dict | None:
    """The size and sha256 recorded when the entry's file was first verified here, or None."""
    try:
        known = json.loads(known_path(entry).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(known, dict) and isinstance(known.get("sha256"), str) and isinstance(known.get("size"), int):
        return known
    return None


def expected_file(entry: PublishedWeights) -> tuple[dict, str] | None:
    """(size and/or sha256 the file must have, where that comes from): pinned in the registry, else recorded on
    first use; None for a file never seen and not pinned."""
    pinned = {k: getattr(entry, k) for k in ("size", "sha256") if getattr(entry, k) is not None}
    if pinned:
        return pinned, "the hash pinned in the published-weights registry"
    known = known_file(entry)
    if known:
        return ({"size": known["size"], "sha256": known["sha256"]},
                f"the file first verified here on {known.get('verified', '?')} ({known_path(entry)})")
    return None


def _record_known(entry: PublishedWeights, seen: dict) -> None:
    if known_file(entry) is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        write_json(known_path(entry), {"name": entry.name, "size": seen["size"], "sha256": seen["sha256"],
                                       "url": redact_url(seen.get("url")), "verified": stamp})


def _check_file(entry: PublishedWeights, path: Path, seen: dict) -> None:
    with open(path, "rb") as f:
        head = f.read(4096)
    if _looks_like_html(head):
        with open(path, "rb") as f:
            raise page_error(entry, f.read(1 << 20).decode("utf-8", "replace"), seen.get("url", str(path)))
    expected = expected_file(entry)
    if expected is None:
        return
    want, origin = expected
    diffs = [f"{k} {seen.get(k)} (expected {want[k]})" for k in ("size", "sha256")
             if k in want and seen.get(k) != want[k]]
    if diffs:
        todo = ("If the host replaced the file on purpose, delete that record to trust the new one"
                if "first verified" in origin else "Check the host, or update the pinned size and sha256")
        raise CheckpointError(f"{entry.name}: the downloaded file differs from {origin}: {', '.join(diffs)}. "
                              f"Refused and deleted; nothing was cached. {todo}.")


def _install(entry: PublishedWeights, path: Path, seen: dict) -> Path:
    """Verify the official checkpoint at ``path`` and write it converted into the entry's cache folder."""
    if seen.get("sha256") is None or seen.get("size") is None:  # the Hub's download: hashed here
        seen = seen | _hash_file(path)
    seen = seen | {"url": redact_url(seen.get("url"))} if "://" in str(seen.get("url")) else seen
    _check_file(entry, path, seen)
    model = load_official(path)  # weights-only unpickler with the official allow-list
    check_fits(model, entry)
    kept = {k: v for k, v in model.weights_info.items() if k in ("layout", "completed_from", "ignored", "warning")}
    model.weights_info = {"kind": "published", "trained": True, **entry.facts(), **kept}
    fetched = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _record_known(entry, seen)
    # atomic: a whole folder renamed into place; one already there is incomplete (this code never leaves one)
    return save_model(model, cache_folder(entry), meta={"file": seen, "fetched": fetched}, overwrite=True)


class _EntryLock:
    """This entry's file lock (other processes) and thread lock (this process); says when it waits."""

    def __init__(self, entry: PublishedWeights, st: DownloadStatus):
        from filelock import FileLock

        self.entry, self.st = entry, st
        lock_dir = weights_root() / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.file = FileLock(str(lock_dir / f"{entry.name}.lock"), thread_local=False)
        self.thread = _locks.setdefault(entry.name, threading.Lock())

    def __enter__(self):
        from filelock import Timeout

        if not self.thread.acquire(blocking=False):
            self._waiting()
            self.thread.acquire()
        try:
            self.file.acquire(timeout=0)
        except Timeout:
            self._waiting()
            self.file.acquire()
        except BaseException:
            self.thread.release()
            raise
        return self

    def _waiting(self):
        self.st.state = "waiting"
        log.warning("%s: another download of these weights is running; waiting for it to finish", self.entry.name)

    def __exit__(self, *exc):
        self.file.release()
        self.thread.release()


def ensure_cached(entry: PublishedWeights, *, retries: int = 3, quiet: bool = False) -> Path:
    """The entry's folder in the project's format, fetched, verified and converted first if needed.
    Raises :class:`WeightsUnavailableError` (offline), :class:`WeightsDownloadError` (what went wrong and what
    to do; ``reason`` "disk" for a full disk) or :class:`CheckpointError` (a file that is not the published
    checkpoint). See the module docstring. Whatever fails, the status says "failed" and no downloaded file is
    kept for reuse (only a ``.part`` that the next try resumes)."""
    kind = entry.host_kind
    if kind == "open_clip":
        raise ValueError(f"{entry.name} is served by open_clip: load {entry.load_source!r}")
    if kind == "hub" and not entry.host.get("file"):  # the project's format on the Hub: its own cache
        hub.hub_download(entry.host["hub"], WEIGHTS_FILE)
        return Path(hub.hub_download(entry.host["hub"], CONFIG_FILE)).parent
    folder = cache_folder(entry)
    if is_cached(entry):
        return folder
    st = _statuses.setdefault(entry.name, DownloadStatus(entry.name))
    if not host_reachable(entry):
        st.state, st.error = "failed", "offline"
        raise WeightsUnavailableError(
            f"{entry.name} is not in the cache ({folder}) and {shown_url(entry)} cannot be reached "
            f"({'HF_HUB_OFFLINE is set' if offline_mode() else 'offline?'}). Run `python -m dferclip weights "
            f"download {entry.name}` on a connected machine and copy {folder} here, or pick other weights.")
    try:
        with _EntryLock(entry, st):
            if is_cached(entry):  # another process (or thread) finished it while we waited
                st.state = "ready"
                return folder
            if kind == "hub":  # an official pickle on the Hub: huggingface_hub downloads and resumes it
                path = Path(hub.hub_download(entry.host["hub"], entry.host["file"]))
                st.state = "verifying"
                _install(entry, path, {"url": shown_url(entry)})
            else:
                target = weights_root() / ".downloads" / f"{entry.name}.pth"
                seen = _download(entry, target, st, retries, quiet)
                st.state = "verifying"
                try:
                    _install(entry, target, seen)
                except BaseException:
                    _drop(target)  # never resume or reuse a file that failed: the next try downloads afresh
                    raise
                target.unlink(missing_ok=True)
    except OSError as e:  # writing the converted folder or the record (the download reports its own)
        st.state, st.error = "failed", _disk_text(entry, e)
        raise WeightsDownloadError(st.error, "disk") from None
    except BaseException as e:
        st.state, st.error = "failed", scrub(str(e)) or type(e).__name__
        raise
    st.state = "ready"
    log.info("%s: ready in %s", entry.name, folder)
    return folder


def _disk_text(entry: PublishedWeights, e: OSError) -> str:
    what = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "a file could not be written"
    return (f"{entry.name}: {what} ({e.strerror or e}) while converting the weights into {weights_root()}; "
            "nothing was cached and the download was deleted. Free some space and try again.")


def install_file(entry: PublishedWeights, path: str | Path) -> Path:
    """A checkpoint downloaded by hand (e.g. from Drive in a browser) -> the entry's cache folder, verified
    exactly as a download is. The file itself is left in place."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such file: {path}")
    if entry.host_kind not in ("drive", "hub") or not (entry.host_kind == "drive" or entry.host.get("file")):
        raise CheckpointError(f"{entry.name} is not published as an official checkpoint file")
    st = _statuses.setdefault(entry.name, DownloadStatus(entry.name))
    try:
        with _EntryLock(entry, st):
            st.state = "verifying"
            folder = _install(entry, path, {"url": path.name} | _hash_file(path))
    except OSError as e:
        st.state, st.error = "failed", _disk_text(entry, e)
        raise WeightsDownloadError(st.error, "disk") from None
    except BaseException as e:
        st.state, st.error = "failed", scrub(str(e)) or type(e).__name__
        raise
    st.state = "ready"
    return folder


def forget_converted(entry: PublishedWeights, why: str) -> None:
    """Delete the entry's converted folder (it failed to load): the next :func:`ensure_cached` fetches again."""
    import shutil

    folder = cache_folder(entry)
    log.warning("%s: the cached weights in %s cannot be used (%s); deleting them to fetch them again",
                entry.name, folder, why)
    shutil.rmtree(folder, ignore_errors=True)
    _statuses.pop(entry.name, None)


# --- who may download what (a public app) -------------------------------------------------------------
DEFAULT_PUBLIC_DISK_BYTES = 6 << 30
ASSUMED_FILE_BYTES = 1 << 30  # a published file's size when neither pinned nor seen (DFER-CLIP ViT-B/32: ~0.6 GB)


def public_downloads() -> set[str]:
    """Entries a public app may download: ``DFERCLIP_PUBLIC_DOWNLOADS`` (comma-separated names, ``*`` for all,
    empty for none), else the app's default entry only."""
    raw = os.environ.get("DFERCLIP_PUBLIC_DOWNLOADS")
    if raw is None:
        name = default_name()
        return {name} if name else set()
    return {n.strip() for n in raw.split(",") if n.strip()}


def disk_budget(public: bool) -> int | None:
    """Bytes the weights cache (downloads, converted weights, backends' compiled towers) may take:
    ``DFERCLIP_WEIGHTS_DISK_BYTES``, else 6 GiB in public mode and no limit otherwise (None)."""
    raw = os.environ.get("DFERCLIP_WEIGHTS_DISK_BYTES", "").strip()
    if raw:
        return int(float(raw))
    return DEFAULT_PUBLIC_DISK_BYTES if public else None


def disk_used() -> int:
    """Bytes under the weights cache and the compiled towers' cache."""
    total = 0
    for root in (weights_root(), weights_root().parent / "openvino"):
        for dirpath, _, names in os.walk(root):
            for n in names:
                try:
                    total += os.lstat(os.path.join(dirpath, n)).st_size
                except OSError:
                    pass
    return total


def disk_needed(entry: PublishedWeights) -> int:
    """What fetching ``entry`` takes at its peak: the download plus the converted copy."""
    size = entry.size or (known_file(entry) or {}).get("size") or ASSUMED_FILE_BYTES
    return 2 * int(size)


def download_refusal(entry: PublishedWeights, public: bool) -> str | None:
    """Why this app may not download ``entry`` now (a sentence for a visitor), or None when it may."""
    if public and "*" not in (allowed := public_downloads()) and entry.name not in allowed:
        return (f"{entry.title} ({entry.name}) is not downloaded on this server, and the operator has not enabled "
                "downloading it here (DFERCLIP_PUBLIC_DOWNLOADS). Pick a model that is marked cached.")
    budget = disk_budget(public)
    if budget is not None:
        used, needed = disk_used(), disk_needed(entry)
        if used + needed > budget:
            return (f"{entry.title} ({entry.name}) needs about {needed / 1e9:.1f} GB to download and convert, and "
                    f"the weights cache holds {used / 1e9:.1f} of its {budget / 1e9:.1f} GB "
                    "(DFERCLIP_WEIGHTS_DISK_BYTES). Pick a model that is marked cached.")
    return None


def request(entry: PublishedWeights, *, public: bool = False) -> DownloadStatus:
    """What the app calls when a visitor picks ``entry``; never blocks on the network or a conversion.

    Returns a snapshot: ``ready`` (cached: load it), ``downloading`` / ``waiting`` / ``verifying`` (a background
    fetch runs: poll :func:`status`), ``refused`` (not allowed here, or over the disk budget; ``error`` says
    why), or ``failed`` (offline: ``error`` says so). A fetch that failed earlier is started again."""
    if is_cached(entry):
        st = _statuses.get(entry.name)
        if st is not None and st.state != "ready" and not in_progress(entry.name):
            st.state = "ready"
        return DownloadStatus(entry.name, "ready")
    if in_progress(entry.name):
        return status(entry.name)
    refusal = download_refusal(entry, public)
    if refusal:
        return DownloadStatus(entry.name, "refused", error=refusal)
    if offline_mode():
        return DownloadStatus(entry.name, "failed", error=f"{entry.name} is not cached and this server is offline "
                              "(HF_HUB_OFFLINE is set)")
    return start_background(entry)
