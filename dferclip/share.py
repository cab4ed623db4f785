"""A workbench state carried in a link, so that a link survives any restart of the server and needs no storage.

The state (model key, the current description set with its edits, the combine mode, an example clip's file
name) is compact JSON, zlib-compressed and base64url-encoded after a format version: ``?s=1.<data>``. A link
is untrusted input: its size is bounded before anything is decoded (and the decompressed size too), and its
content gets the same checks as an uploaded set. A link that is malformed, truncated or tampered with raises
:class:`ShareError` with one message; it never names a path on the server.

    from dferclip.share import SharedState, link, state_from_link
    url = link("https://huggingface.co/spaces/org/dferclip", SharedState("dfew-fold1", ds, "max", None))
    state_from_link(url).descriptions        # the same set, checked
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qs, urlencode, urlsplit

from .errors import DferclipError
from .scoring import COMBINE_MODES
from .text.descriptions import FORMAT, DescriptionSet

VERSION = "1"
PARAM = "s"  # the query parameter that carries the state
MAX_LINK_CHARS = 6000  # what a chat message and any browser carry; a bigger state is refused with a message
MAX_JSON_BYTES = 256 * 1024  # a link never inflates past this (no decompression bomb)
MAX_KEY_CHARS = 300
_CLIP_NAME = re.compile(r"^[\w .()-]{1,120}$")  # an example's file name: no folder, nothing a path could use


class ShareError(DferclipError):
    """A link that cannot be made (too big) or read (malformed, truncated, tampered with)."""


@dataclass
class SharedState:
    model: str  # the model's key in the app's list
    descriptions: DescriptionSet  # the current set, edits included
    combine: str  # how a class's descriptors combine (scoring.COMBINE_MODES)
    clip: Optional[str] = None  # the file name of one of the app's example clips, when that was the clip


def encode(state: SharedState) -> str:
    """The state as a link token ``1.<base64url(zlib(json))>``; ShareError when it is too big for a link."""
    ds = state.descriptions
    data = {"v": VERSION, "model": state.model, "combine": state.combine, "clip": state.clip,
            "set": {"name": ds.name, "class_set": ds.class_set, "version": ds.version,
                    "classes": [[c, list(d)] for c, d in zip(ds.classes, ds.descriptions)]}}
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    token = VERSION + "." + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode("ascii").rstrip("=")
    if len(token) > MAX_LINK_CHARS - 200:  # room for the address in front
        raise ShareError(f"this description set is too big for a link ({len(token)} characters, at most "
                         f"{MAX_LINK_CHARS - 200}); download it as a file and share that instead")
    return token


def decode(token: str) -> SharedState:
    """A link token back to a checked state; ShareError (one message) for anything else."""
    if not isinstance(token, str) or not token:
        raise ShareError("the link holds no workbench state")
    if len(token) > MAX_LINK_CHARS:
        raise ShareError(f"the link's state is {len(token)} characters; a link holds at most {MAX_LINK_CHARS}")
    version, dot, body = token.partition(".")
    if not dot or version != VERSION:
        raise ShareError(f"this link was made by another version of the app (format {version[:10]!r}, this app "
                         f"reads {VERSION!r})")
    try:
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, MAX_JSON_BYTES)
        if inflater.unconsumed_tail or not inflater.eof:
            raise ShareError("the link is damaged or cut short: its state does not decode")
        data = json.loads(raw.decode("utf-8"))
    except ShareError:
        raise
    except (binascii.Error, ValueError, zlib.error, UnicodeDecodeError, RecursionError):
        raise ShareError("the link is damaged or cut short: its state does not decode") from None
    return _checked(data)


def _checked(data) -> SharedState:
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise ShareError("the link's state is not a workbench state")
    model, combine, clip, s = data.get("model"), data.get("combine"), data.get("clip"), data.get("set")
    if not isinstance(model, str) or not 0 < len(model) <= MAX_KEY_CHARS:
        raise ShareError("the link names no model")
    if combine not in COMBINE_MODES:
        raise ShareError(f"the link's combine mode is not one of {', '.join(COMBINE_MODES)}")
    if clip is not None and (not isinstance(clip, str) or not _CLIP_NAME.match(clip) or clip.strip(". ") == ""):
        raise ShareError("the link's clip is not an example clip's name")
    if not isinstance(s, dict) or not isinstance(s.get("classes"), list):
        raise ShareError("the link holds no description set")
    pairs = s["classes"]
    if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise ShareError("the link's description set is malformed")
    try:  # the checks an uploaded set gets
        ds = DescriptionSet.from_dict({"format": FORMAT, "name": s.get("name", "custom"),
                                       "class_set": s.get("class_set", "custom"), "version": s.get("version", 1),
                                       "classes": [{"name": c, "descriptions": d} for c, d in pairs]})
    except DferclipError as e:
        raise ShareError(f"the link's description set is refused: {e}") from None
    except (TypeError, ValueError, AttributeError):
        raise ShareError("the link's description set is malformed") from None
    return SharedState(model, ds, combine, clip)


def link(base_url: str, state: SharedState) -> str:
    """The page's address with the state in its query (``base_url``'s own query and fragment dropped)."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}?{urlencode({PARAM: encode(state)})}"


def token_of(url_or_token: str) -> str:
    """The state token of a link (or the token itself)."""
    text = str(url_or_token or "").strip()
    if "?" in text or text.startswith(("http://", "https://")):
        values = parse_qs(urlsplit(text).query).get(PARAM)
        if not values:
            raise ShareError(f"the link has no ?{PARAM}= state")
        return values[0]
    return text


def state_from_link(url_or_token: str) -> SharedState:
    return decode(token_of(url_or_token))
