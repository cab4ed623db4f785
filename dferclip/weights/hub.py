"""Downloads from the Hugging Face Hub (weights repos, open_clip pretrained towers), failing fast offline.

huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, and otherwise retries unreachable hosts for
tens of seconds. So before any download we check in about a second whether the Hub answers at all, and if
it does not we only look in the local cache and say clearly what is missing.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any
from urllib.parse import urlparse

from ..errors import WeightsUnavailableError

log = logging.getLogger(__name__)


def offline_mode() -> bool:
    """HF_HUB_OFFLINE is set: nothing is fetched, local files only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


REACHABLE_TTL_S = 60.0  # how long one answer holds: an outage (or a recovery) is seen again after it
_reachable_cache: dict[tuple, tuple[float, bool]] = {}  # (host, port, timeout) -> (when, answer)
_reachable_lock = threading.Lock()


def host_reachable(url: str, timeout: float = 1.5) -> bool:
    """Whether ``url``'s host accepts a TCP connection within ``timeout`` seconds, name lookup included (False
    when HF_HUB_OFFLINE is set). Answers are kept for :data:`REACHABLE_TTL_S` seconds, so a burst of downloads
    probes once and a passing outage does not last for the process."""
    if offline_mode():
        return False
    u = urlparse(url)
    key = (u.hostname, u.port or (443 if u.scheme == "https" else 80), timeout)
    with _reachable_lock:
        cached = _reachable_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < REACHABLE_TTL_S:
            return cached[1]
    answer = _probe(key[0], key[1], timeout)
    with _reachable_lock:
        _reachable_cache[key] = (time.monotonic(), answer)
    return answer


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hub endpoint (``HF_ENDPOINT``) is reachable: :func:`host_reachable`."""
    return host_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


def forget_reachability() -> None:
    """Drop the remembered answers of :func:`host_reachable` (the next call probes again)."""
    with _reachable_lock:
        _reachable_cache.clear()


def _probe(host: str, port: int, timeout: float) -> bool:
    answer: list = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answer.append(True)
        except OSError as e:
            log.info("%s:%s unreachable (%s): using local files only", host, port, e)

    t = threading.Thread(target=connect, daemon=True)  # the name lookup ignores socket timeouts
    t.start()
    t.join(timeout)
    return bool(answer)


def hub_download(repo_id: str, filename: str, revision: str | None = None) -> str:
    """A file from a Hub model repo, from the cache when offline. Raises WeightsUnavailableError."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    online = hub_reachable()
    try:
        return hf_hub_download(repo_id, filename, revision=revision, local_files_only=not online)
    except LocalEntryNotFoundError:
        raise WeightsUnavailableError(
            f"{repo_id}/{filename} is not in the local Hugging Face cache and the Hub cannot be reached "
            "(offline?). Download it on a connected machine, or point to a local file."
        ) from None
    except RepositoryNotFoundError:
        raise WeightsUnavailableError(f"no Hugging Face repo {repo_id!r} (or it is private)") from None
    except EntryNotFoundError:
        raise WeightsUnavailableError(f"Hugging Face repo {repo_id!r} has no file {filename!r}") from None


def pretrained_clip(clip: Any, tag: str):
    """open_clip towers with pretrained weights (e.g. tag "openai"), or a local weights path. Offline, weights
    already in the Hugging Face cache are used; only missing ones are an error."""
    import open_clip

    if not isinstance(clip, str):
        raise WeightsUnavailableError("pretrained weights need a registered open_clip architecture name")
    weights = pretrained_clip_source(clip, tag)
    if weights is None:
        raise WeightsUnavailableError(
            f"open_clip pretrained weights {clip}/{tag} are not in the local Hugging Face cache and the Hub "
            "cannot be reached (offline?). Download them on a connected machine, or pass a local weights file."
        )
    if weights != tag:
        log.info("Hub unreachable: open_clip weights %s/%s from the cache (%s)", clip, tag, weights)
    try:
        return open_clip.create_model(clip, pretrained=weights, device="cpu")
    except RuntimeError as e:  # open_clip reports unknown tags and failed downloads this way
        raise WeightsUnavailableError(f"cannot load open_clip weights {clip}/{tag}: {e}") from None


def pretrained_clip_source(clip: str, tag: str) -> str | None:
    """What open_clip should load for ``clip``/``tag``: the tag itself (a local file, or a download the Hub can
    serve), the cached file when the Hub cannot be reached, or None when the weights cannot be had here."""
    if os.path.isfile(tag) or hub_reachable():
        return tag
    return cached_open_clip_weights(clip, tag)


def cached_open_clip_weights(clip: str, tag: str) -> str | None:
    """The local file of open_clip's pretrained weights ``clip``/``tag`` when the Hugging Face cache holds it
    (the file names open_clip itself downloads: safetensors first), without any network access."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_WEIGHTS_NAME
    from open_clip.pretrained import _get_safe_alternatives, get_pretrained_cfg

    hub = get_pretrained_cfg(clip, tag).get("hf_hub", "")
    if not hub:
        return None
    repo_id, filename = os.path.split(hub)  # "org/name/" -> the default file name, as open_clip reads it
    filename = filename or HF_WEIGHTS_NAME
    for name in (*_get_safe_alternatives(filename), filename):
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None
