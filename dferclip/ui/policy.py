"""What a visitor may do: the app's mode and the bounds that keep one visitor from exhausting the server.

Two modes (see docs/security.md):

- **public**: anyone can reach the app and call every endpoint with any values (a Hugging Face Space, or any
  server bound to a non-loopback address). Nothing a visitor sends reads or writes the server's files: saved
  description sets stay in the visitor's session, server paths are not accepted, LLM base URLs must be public.
- **local**: ``make app`` on 127.0.0.1, used by the machine's owner. Saving writes ``descriptions/`` (keeping
  history) and evaluation sets may name files on the disk.

``DFERCLIP_MODE=public|local`` overrides the automatic choice (``SPACE_ID`` set, or a non-loopback bind
address, means public). The bounds below are per visitor (session) and in total; the ``DFERCLIP_*`` variables
in :meth:`Policy.from_env` change them.
"""
from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

MODES = ("public", "local")


def detect_mode(host: Optional[str] = None) -> str:
    forced = os.environ.get("DFERCLIP_MODE", "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ValueError(f"DFERCLIP_MODE={forced!r}: use public or local")
        return forced
    if os.environ.get("SPACE_ID"):
        return "public"
    return "local" if host is None or _is_loopback(host) else "public"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


@dataclass(frozen=True)
class Policy:
    mode: str = "local"
    max_eval_clips: int = 2000
    embedding_cache_bytes: int = 2 << 30
    llm_requests_per_minute: int = 60  # per visitor
    llm_requests_per_minute_total: int = 240
    queue_size: int = 64
    max_sessions: int = 10_000  # visitors' sessions kept in memory (each holds its clip); the oldest go first
    allow_private_llm_urls: bool = True
    upload_max_age_s: int = 0  # uploads and files made for visitors are deleted this long after (0: kept)

    @property
    def public(self) -> bool:
        return self.mode == "public"

    @classmethod
    def from_env(cls, host: Optional[str] = None, mode: Optional[str] = None) -> "Policy":
        mode = mode or detect_mode(host)
        public = mode == "public"
        return cls(
            mode=mode,
            max_eval_clips=_env_int("DFERCLIP_MAX_EVAL_CLIPS", 64 if public else 2000),
            embedding_cache_bytes=_env_int("DFERCLIP_EMBEDDING_CACHE_BYTES", (256 << 20) if public else (2 << 30)),
            llm_requests_per_minute=_env_int("DFERCLIP_LLM_PER_MINUTE", 30 if public else 600),
            llm_requests_per_minute_total=_env_int("DFERCLIP_LLM_PER_MINUTE_TOTAL", 120 if public else 6000),
            queue_size=_env_int("DFERCLIP_QUEUE_SIZE", 32 if public else 64),
            max_sessions=_env_int("DFERCLIP_MAX_SESSIONS", 200 if public else 10_000),
            allow_private_llm_urls=not public or os.environ.get("DFERCLIP_LLM_ALLOW_PRIVATE_URLS") == "1",
            upload_max_age_s=_env_int("DFERCLIP_UPLOAD_MAX_AGE_S", 3600 if public else 0),
        )


class RateLimiter:
    """At most ``per_key`` events per ``window_s`` for one key (a visitor's session) and ``total`` for all."""

    def __init__(self, per_key: int, total: int, window_s: float = 60.0, max_keys: int = 10_000):
        self.per_key, self.total, self.window_s, self.max_keys = per_key, total, window_s, max_keys
        self._keys: dict[str, deque] = {}
        self._all: deque = deque()
        self._lock = threading.Lock()

    def _trim(self, q: deque, now: float) -> None:
        while q and now - q[0] >= self.window_s:
            q.popleft()

    def take(self, key: str, n: int = 1) -> Optional[float]:
        """Record ``n`` events for ``key``; None if allowed, else the seconds to wait (nothing recorded)."""
        now = time.monotonic()
        with self._lock:
            self._trim(self._all, now)
            q = self._keys.get(key)
            if q is None:
                if len(self._keys) >= self.max_keys:  # forget idle visitors first
                    for k in [k for k, v in self._keys.items() if not v or now - v[-1] >= self.window_s]:
                        del self._keys[k]
                q = self._keys[key] = deque()
            self._trim(q, now)
            if len(q) + n > self.per_key:
                return self.window_s - (now - q[0]) if q else self.window_s
            if len(self._all) + n > self.total:
                return self.window_s - (now - self._all[0]) if self._all else self.window_s
            q.extend([now] * n)
            self._all.extend([now] * n)
            return None
