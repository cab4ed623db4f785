"""URLs as they may be shown or stored: without credentials or query strings (an LLM server's, a weights
mirror's). A module of its own so that the weights and the LLM code both use it without importing each other."""
from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: Optional[str]) -> str:
    """The URL without ``user:password@`` (and without a query string, which can carry tokens)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
