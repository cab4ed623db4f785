"""Downloads from the Hugging Face Hub (weights repos, open_clip pretrained towers), failing fast offline.

huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, and otherwise retries unreachable hosts for
tens of seconds. So before any download we check in about a second whether the Hub answers at all, and if
it does not we only look in the local cache and say clearly what is missing.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

from ..errors import WeightsUnavailableError

log = logging.getLogger(__name__)


def _env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hub endpoint accepts a TCP connection (cached for the process)."""
    if _env_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    t0 = time.perf_counter()
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError as e:
        log.info("Hub %s unreachable (%s, %.2fs): using the local cache only", endpoint, e, time.perf_counter() - t0)
        return False


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
    """open_clip towers with pretrained weights (e.g. tag "openai"), or a local weights path."""
    import open_clip

    if not isinstance(clip, str):
        raise WeightsUnavailableError("pretrained weights need a registered open_clip architecture name")
    if not os.path.isfile(tag) and not hub_reachable():
        raise WeightsUnavailableError(
            f"open_clip pretrained weights {clip}/{tag} must be downloaded from the Hugging Face Hub, "
            "which cannot be reached (offline?). Pass a local weights file instead."
        )
    try:
        return open_clip.create_model(clip, pretrained=tag, device="cpu")
    except RuntimeError as e:  # open_clip reports unknown tags and failed downloads this way
        raise WeightsUnavailableError(f"cannot load open_clip weights {clip}/{tag}: {e}") from None
