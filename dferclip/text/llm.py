"""Class descriptions from a language model: any OpenAI-compatible chat-completions server, or (with no server
configured) a small instruct model run on this machine (:mod:`dferclip.text.local_llm`).

- Settings come from the environment (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``DFERCLIP_LLM_MODEL``) or are
  typed in for the session (:func:`visitor_settings`). The server's key is used only with the server's own
  base URL: a base URL someone types needs a key they type too. A key lives only in :class:`LLMSettings`
  (hidden from ``repr``), is never logged, shown or saved, and is sent only to its base URL (as the
  ``Authorization`` header, by the openai client). Credentials inside a URL (``user:pass@host``) are stripped
  wherever a URL is shown or stored (:func:`redact_url`).
- Prompt styles are data (``dferclip/prompts/styles.json``); the prompt is a template the caller may edit.
- Replies are parsed tolerantly (JSON, JSON in code fences, bullet or numbered lists, one comma-separated line);
  ``response_format`` json_schema is asked for where the server accepts it.
- Backends: ``"openai"`` when a server is configured (``OPENAI_BASE_URL`` or ``OPENAI_API_KEY``, or a base URL
  or key typed in), else ``"local"``; ``DFERCLIP_LLM_BACKEND`` or ``backend=`` chooses explicitly. Both answer
  through :func:`complete`, so parsing, checks and provenance are shared.
- Bounds (docs/security.md): templates are filled by :func:`render_prompt` without ``str.format`` (bare
  placeholders only); template, system text, rendered prompt and ``n`` are checked before the first request;
  ``max_tokens`` is sent; a server request has one total deadline (``DFERCLIP_LLM_DEADLINE_S``, 60 s) for it and
  its retries, stops within a quarter second of a cancel, follows no redirect and reads at most 1 MB
  (:mod:`dferclip.text.llm_http`); a reply is length-checked before it is parsed and token-counted. On a public
  app a visitor names a model for the operator's server only if ``DFERCLIP_LLM_ALLOW_MODELS`` allows it.
- :func:`check_description` flags label leaks (the emotion's word family) and texts too long for CLIP's
  77-token context (counting the learned context tokens).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import (
    LLMCancelledError,
    LLMConfigError,
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMReplyError,
    LLMServerError,
    LLMTimeoutError,
    TextTooLongError,
)
from ..urls import redact_url
from .descriptions import MAX_DESCRIPTIONS_PER_CLASS, MAX_TEXT_CHARS
from .tokens import CONTEXT_LENGTH, token_count

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_STYLE = "dferclip"
BACKENDS = ("openai", "local")
_EXAMPLE_CLASS = "anger"
_EXAMPLE_FALLBACK = "furrowed eyebrows, narrow eyes, tightened lips, and flared nostrils."

RESPONSE_SCHEMA = {
    "name": "class_descriptions",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"descriptions": {"type": "array", "items": {"type": "string"}}},
        "required": ["descriptions"],
        "additionalProperties": False,
    },
}
_JSON_HINT = ' Reply as JSON: {"descriptions": ["...", ...]}.'

# What one generation may send and take (docs/security.md): refused before any request, never cut silently.
MAX_TEMPLATE_CHARS = 4000  # the user-prompt template
MAX_SYSTEM_CHARS = 4000  # the system prompt
MAX_PROMPT_CHARS = 16_000  # one rendered user prompt (the class names of a 100-class set fit)
MAX_REPLY_CHARS = 50_000  # one reply's text, checked before it is parsed or token-counted
TOKENS_PER_DESCRIPTION, TOKENS_FRAMING, MAX_REPLY_TOKENS = 60, 100, 4000  # max_tokens sent with each request
DEFAULT_DEADLINE_S = 60.0  # one request, retries included (DFERCLIP_LLM_DEADLINE_S)
PLACEHOLDERS = ("name", "article", "others", "n", "example")


def check_length(what: str, text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else a clear :class:`TextTooLongError`."""
    if len(text) > limit:
        raise TextTooLongError(f"the {what} has {len(text)} characters; at most {limit} are accepted")
    return text


def reply_tokens(n: int) -> int:
    """``max_tokens`` for a reply of ``n`` descriptions."""
    return min(MAX_REPLY_TOKENS, TOKENS_FRAMING + TOKENS_PER_DESCRIPTION * max(1, n))


def _deadline_from_env() -> float:
    value = (os.environ.get("DFERCLIP_LLM_DEADLINE_S") or "").strip()
    try:
        seconds = float(value) if value else DEFAULT_DEADLINE_S
    except ValueError:
        raise LLMConfigError(f"DFERCLIP_LLM_DEADLINE_S={value!r} is not a number of seconds") from None
    if not 0 < seconds <= 3600:
        raise LLMConfigError("DFERCLIP_LLM_DEADLINE_S must be between 0 and 3600 seconds")
    return seconds


def operator_models() -> Optional[frozenset]:
    """The models a visitor may name on the operator's server besides its own (``DFERCLIP_LLM_ALLOW_MODELS``, a
    comma list; "*": any, returned as None)."""
    value = (os.environ.get("DFERCLIP_LLM_ALLOW_MODELS") or "").strip()
    if value == "*":
        return None
    return frozenset(m.strip() for m in value.split(",") if m.strip())


# --- settings ------------------------------------------------------------------------------------
@dataclass
class LLMSettings:
    """Where and how to generate. ``api_key`` is excluded from ``repr`` so it cannot leak into logs."""

    model: str = DEFAULT_MODEL
    base_url: Optional[str] = None  # None: OpenAI's API
    api_key: Optional[str] = field(default=None, repr=False)
    temperature: float = 0.7
    timeout: float = DEFAULT_DEADLINE_S  # seconds for one request in all (retries included), not per read
    max_retries: int = 2
    structured: bool = True  # ask for json_schema output; falls back to plain text if the server refuses
    # "openai": an OpenAI-compatible server; "local": a small instruct model run here (text/local_models.json)
    backend: str = "openai"
    local_model: Optional[str] = None  # a name in the local model registry; None: its default
    max_new_tokens: int = 200  # local backend: the longest reply, in tokens
    max_tokens: Optional[int] = None  # server backend: max_tokens sent (None: for the style's n descriptions)
    public_only: bool = False  # connect only to public addresses (a visitor's own server on a public app)

    @classmethod
    def from_env(cls, **overrides) -> "LLMSettings":
        """Environment values, overridden by the non-empty ``overrides`` (e.g. fields typed into the app)."""
        values = {
            "model": os.environ.get("DFERCLIP_LLM_MODEL") or DEFAULT_MODEL,
            "base_url": os.environ.get("OPENAI_BASE_URL") or None,
            "api_key": os.environ.get("OPENAI_API_KEY") or None,
            "timeout": _deadline_from_env(),
        }
        values.update({k: v for k, v in overrides.items() if v not in (None, "")})
        if "backend" not in values:
            values["backend"] = default_backend(values)
        return cls(**values)

    def describe(self) -> str:
        """A printable summary without the key (and without credentials embedded in the URL)."""
        if self.backend == "local":
            from .local_llm import get_local_model

            return get_local_model(self.local_model).describe()
        return f"model {self.model} at {redact_url(self.base_url or OPENAI_URL)}"

    def scrub(self, text: str) -> str:
        """``text`` with this key and any URL credentials blanked out (for messages that quote a server)."""
        if self.api_key and len(self.api_key) >= 4:
            text = text.replace(self.api_key, "***")
        if self.base_url:
            text = text.replace(self.base_url, redact_url(self.base_url))
        return text


OPENAI_URL = "https://api.openai.com/v1"


def _same_server(a: Optional[str], b: Optional[str]) -> bool:
    def norm(u):
        return redact_url(u or OPENAI_URL).rstrip("/").lower()

    return norm(a) == norm(b)


def visitor_settings(model: str = "", base_url: str = "", api_key: str = "", *, backend: str = "",
                     local_model: str = "", allow_private_urls: bool = True,
                     restrict_models: bool = False) -> LLMSettings:
    """Settings for a request from someone who is not the server's operator (a visitor of the app).

    The server's key (``OPENAI_API_KEY``) is used only when the request goes to the server's own base URL
    (``OPENAI_BASE_URL`` or OpenAI's). A base URL the visitor names needs a key the visitor types: it never
    falls back to the server's key. With ``allow_private_urls=False`` (a public app) a visitor's base URL
    must be an http(s) URL whose host resolves to public addresses only (no loopback, private or link-local
    address of the server's network). ``backend`` "local" runs a model of the local registry (``local_model``,
    validated; no key, no server), "openai" a server; "" chooses as :func:`default_backend`. With
    ``restrict_models`` (a public app) a model named for the operator's server must be its own
    (``DFERCLIP_LLM_MODEL``) or one the operator allows (:func:`operator_models`); a visitor's own server and key
    may use any model."""
    server = LLMSettings.from_env()
    backend = (backend or "").strip().lower()
    if backend == "local":
        from .local_llm import get_local_model

        return replace(server, backend="local", local_model=get_local_model((local_model or "").strip() or None).name)
    if backend not in ("", "openai"):
        raise LLMConfigError(f"unknown LLM backend {backend!r}; use one of {', '.join(BACKENDS)}")
    model, base_url, api_key = (model or "").strip(), (base_url or "").strip(), (api_key or "").strip()
    own_url = base_url and not _same_server(base_url, server.base_url)
    if own_url:
        if not api_key:
            raise LLMConfigError(
                f"{redact_url(base_url)} is not this app's configured server, so its API key cannot be used "
                "there: type the key for that server (any non-empty value for a local server without keys)"
            )
        _check_visitor_url(base_url, allow_private_urls)
    check_length("model name", model, 200)
    if restrict_models and not own_url and model and model != server.model:
        allowed = operator_models()
        if allowed is not None and model not in allowed:
            raise LLMConfigError(
                f"this app's LLM server runs {server.model!r}; its operator allows no other model name here "
                "(leave the name empty, or type your own server's base URL and key to use another model)")
    chosen = {"base_url": base_url if own_url else server.base_url,
              "api_key": api_key or (None if own_url else server.api_key),
              "public_only": bool(own_url) and not allow_private_urls}
    return replace(server, model=model or server.model, backend=backend or default_backend(chosen), **chosen)


def _check_visitor_url(url: str, allow_private: bool) -> None:
    import ipaddress
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise LLMConfigError("the base URL is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise LLMConfigError("the base URL must start with http:// or https:// and name a host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise LLMConnectionError(f"cannot resolve {host}") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if not ip.is_global:
            raise LLMConfigError(
                f"{redact_url(url)} points into the app server's own network ({ip}); on a public app a typed "
                "base URL must be a public server"
            )


def default_backend(values: dict) -> str:
    """``DFERCLIP_LLM_BACKEND``, else "openai" when a server is configured or typed in (base URL or key), else
    "local": every visitor can generate without a key."""
    chosen = (os.environ.get("DFERCLIP_LLM_BACKEND") or "").strip().lower()
    if chosen:
        if chosen not in BACKENDS:
            raise LLMConfigError(f"DFERCLIP_LLM_BACKEND={chosen!r}: use one of {', '.join(BACKENDS)}")
        return chosen
    return "openai" if values.get("base_url") or values.get("api_key") else "local"


def make_chat_client(settings: LLMSettings):
    """The client :func:`generate` talks to: a loaded local model or an ``openai.OpenAI`` client."""
    if settings.backend == "local":
        from .local_llm import local_chat

        return local_chat(settings.local_model)
    if settings.backend != "openai":
        raise LLMConfigError(f"unknown LLM backend {settings.backend!r}; use one of {', '.join(BACKENDS)}")
    return make_client(settings)


def make_client(settings: LLMSettings, http_client=None):
    """An ``openai.OpenAI`` client for these settings (constructed lazily: it refuses to exist without a key)."""
    import openai

    if not settings.api_key:
        raise LLMConfigError(
            "no API key: set OPENAI_API_KEY (for a local server such as Ollama or LM Studio any non-empty "
            "value works) or type one in; editing and scoring descriptions keep working without it"
        )
    if not settings.model:
        raise LLMConfigError("no model name: set DFERCLIP_LLM_MODEL or type one in")
    from .llm_http import http_client as limited_client

    # retries are made by complete(), within the call's deadline; redirects are never followed
    kwargs = {"api_key": settings.api_key, "timeout": settings.timeout, "max_retries": 0,
              "http_client": http_client or limited_client(settings.timeout, settings.public_only)}
    if settings.base_url:
        kwargs["base_url"] = settings.base_url
    return openai.OpenAI(**kwargs)


# --- prompt styles ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptStyle:
    name: str
    label: str
    source: str
    system: str
    user: str  # template with {name} {article} {others} {n} {example}
    n: int


@lru_cache(maxsize=1)
def prompt_styles() -> dict[str, PromptStyle]:
    data = json.loads((PROMPTS_DIR / "styles.json").read_text())
    return {k: PromptStyle(name=k, **v) for k, v in data["styles"].items()}


def get_style(name: str) -> PromptStyle:
    styles = prompt_styles()
    if name not in styles:
        raise LLMConfigError(f"unknown prompt style {name!r}; known: {', '.join(styles)}")
    return styles[name]


def _example_for(class_name: str) -> str:
    """An official DFER-CLIP description of another class, so the example never answers the question."""
    from .descriptions import official_descriptions

    try:
        ds = official_descriptions(7)
    except Exception:  # the data file is missing: the style still works with the built-in example
        return _EXAMPLE_FALLBACK
    other = _EXAMPLE_CLASS if class_name != _EXAMPLE_CLASS else "sadness"
    return ds.descriptions[ds.classes.index(other)][0] if other in ds.classes else _EXAMPLE_FALLBACK


def template_fields(template: str) -> list[tuple[str, Optional[str]]]:
    """(literal text, placeholder or None) pairs of a prompt template: only the placeholders of
    :data:`PLACEHOLDERS`, bare (no format spec, conversion, attribute or index); ``{{``/``}}`` are braces."""
    import string

    hint = ("use {name}, {article}, {others}, {n}, {example} as they are, and double braces for literal ones")
    check_length("prompt template", template, MAX_TEMPLATE_CHARS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise LLMConfigError(f"prompt template has a broken placeholder ({e}); {hint}") from None
    fields = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (name not in PLACEHOLDERS or spec or conversion):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise LLMConfigError(f"prompt template has an unknown or broken placeholder {shown[:60]}; {hint}")
        fields.append((literal, name))
    return fields


def render_prompt(template: str, class_name: str, classes: Sequence[str], n: int) -> str:
    """Fill a user-prompt template for one class (placeholders are substituted as plain text, never through
    ``str.format``); unknown or formatted ``{placeholders}`` and a prompt over :data:`MAX_PROMPT_CHARS` are
    clear errors."""
    fields = template_fields(template)
    used = {name for _, name in fields if name}
    others = [c for c in classes if c != class_name]
    values = {
        "name": class_name,
        "article": "an" if class_name[:1].lower() in "aeiou" else "a",
        "others": ", ".join(others) if others else "other expressions",
        "n": str(int(n)),
        "example": _example_for(class_name) if "example" in used else "",
    }
    size = sum(len(literal) + (len(values[name]) if name else 0) for literal, name in fields)
    if size > MAX_PROMPT_CHARS:
        raise TextTooLongError(f"the prompt for {class_name[:60]!r} would have {size} characters; at most "
                               f"{MAX_PROMPT_CHARS} are sent (shorten the template or the class names)")
    return "".join(literal + (values[name] if name else "") for literal, name in fields)


# --- reply parsing ---------------------------------------------------------------------------------
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2013]|\d+[.)]|\(\d+\))\s+(.*\S)\s*$")


def _strings_from_json(obj, class_name: Optional[str]) -> Optional[list[str]]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        out = []
        for item in obj:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict):
                out += [v for v in item.values() if isinstance(v, str)][:1]
        return out
    if isinstance(obj, dict):
        for key in ("descriptions", "description", "features", "descriptors"):
            if key in obj:
                return _strings_from_json(obj[key], class_name)
        if class_name is not None:
            for k, v in obj.items():  # CuPL format {class: [sentences]}
                if isinstance(k, str) and k.lower() == class_name.lower():
                    return _strings_from_json(v, None)
        if len(obj) == 1:
            return _strings_from_json(next(iter(obj.values())), None)
    return None


def _clean(text: str) -> str:
    text = text.strip().strip('"\u201c\u201d').strip()
    text = re.sub(r"^(?:A:|Answer:)\s*", "", text)
    return re.sub(r"\s+", " ", text).strip()


def parse_descriptions(reply: str, class_name: Optional[str] = None) -> list[str]:
    """Descriptions from a model reply: JSON (bare or in a code fence), a bullet/numbered list, or plain lines."""
    if not isinstance(reply, str) or not reply.strip():
        raise LLMReplyError("the model returned an empty reply")
    candidates = [m.group(1) for m in _FENCE.finditer(reply)] + [reply]
    for chunk in candidates:
        chunk = chunk.strip()
        start = min([i for i in (chunk.find("{"), chunk.find("[")) if i >= 0], default=-1)
        if start < 0:
            continue
        try:
            obj, _ = json.JSONDecoder().raw_decode(chunk[start:])
        except json.JSONDecodeError:
            continue
        found = _strings_from_json(obj, class_name)
        if found is not None:
            out = [_clean(s) for s in found if isinstance(s, str) and _clean(s)]
            if out:
                return out
    body = _FENCE.sub(lambda m: m.group(1), reply)
    lines = [re.sub(r"^\s*(?:A:|Answer:)\s*", "", ln) for ln in body.splitlines() if ln.strip()]
    bullets = [m.group(1) for m in map(_BULLET.match, lines) if m]
    if bullets:
        return [_clean(b) for b in bullets if _clean(b)]
    plain = [_clean(ln) for ln in lines if not ln.rstrip().endswith(":") and _clean(ln)]
    if plain and not any(ch in "{}[]" for ch in "".join(plain)):
        return plain
    raise LLMReplyError(f"could not read descriptions from the model's reply: {reply[:200]!r}")


# --- checks ----------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def emotion_words() -> dict[str, list[str]]:
    return json.loads((PROMPTS_DIR / "emotion_words.json").read_text())["families"]


def _stem(word: str) -> str:
    for suffix in ("ness", "ment", "ful", "ed", "ing", "ly", "y"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def word_family(class_name: str) -> list[str]:
    """Words that name this class's emotion: the listed family, else the name, its stem and stem-derived forms."""
    key = class_name.strip().lower()
    family = emotion_words().get(key)
    if family is not None:
        return list(family)
    stem = _stem(key)
    bases = [stem, stem[:-1]] if stem.endswith("e") else [stem]
    forms = [b + s for b in bases for s in ("ness", "ment", "ed", "ing", "ly", "y", "ful")]
    return list(dict.fromkeys([key, stem] + forms))


def find_leaks(text: str, class_name: str) -> list[str]:
    """The words of ``class_name``'s family that ``text`` uses (whole words, case-insensitive)."""
    return leaks(text, (class_name,))[class_name]


def _whole_word(word: str) -> "re.Pattern":
    return re.compile(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", re.I)


@lru_cache(maxsize=64)
def _families(classes: tuple[str, ...]) -> tuple["re.Pattern", dict[str, list[str]], dict[str, "re.Pattern"]]:
    """One pattern for every family word of ``classes`` (longest first), built once per class set."""
    families = {c: word_family(c) for c in classes}
    words = sorted({w.lower() for f in families.values() for w in f}, key=len, reverse=True)
    # a lookahead: matches may overlap, so every place a family word starts is seen
    pattern = re.compile(r"(?<![A-Za-z])(?=(" + "|".join(map(re.escape, words)) + r")(?![A-Za-z]))", re.I)
    return pattern, families, {w: _whole_word(w) for w in words}


def leaks(text: str, classes: Sequence[str]) -> dict[str, list[str]]:
    """For each of ``classes``: the words of its family that ``text`` uses, as :func:`find_leaks` says, in one
    pass over the text (a set of 100 classes has about 900 family words)."""
    pattern, families, single = _families(tuple(classes))
    spans = {m.group(1).lower() for m in pattern.finditer(text)}
    found = set(spans)
    for span in spans:  # a shorter family word at the same place as a longer one ("sad" in "sad-eyed")
        found.update(w for w, p in single.items() if w != span and w in span and p.search(span))
    return {c: [w for w in f if w.lower() in found] for c, f in families.items()}


@dataclass(frozen=True)
class Flag:
    kind: str  # "leak" | "other-emotion" | "too-long"
    message: str


def check_description(
    text: str,
    class_name: str,
    classes: Sequence[str] = (),
    *,
    reserved_tokens: int = 8,
    templates: Sequence[str] = (),
    context_length: int = CONTEXT_LENGTH,
) -> list[Flag]:
    """Leak and length flags for one description.

    ``reserved_tokens``: learned context tokens in front of it (8 for DFER-CLIP). ``templates``: zero-shot
    templates (``{name}``, ``{description}``) it is wrapped in; the longest one counts. Remembered for the
    last texts checked: a re-score checks only the descriptions that changed.
    """
    return list(_checked(text, class_name, tuple(classes), reserved_tokens, tuple(templates), context_length))


@lru_cache(maxsize=20_000)
def _checked(text: str, class_name: str, classes: tuple[str, ...], reserved_tokens: int, templates: tuple[str, ...],
             context_length: int) -> tuple[Flag, ...]:
    flags = []
    used = leaks(text, tuple(dict.fromkeys([class_name, *classes])))
    own = used[class_name]
    if own:
        flags.append(Flag("leak", f"names the emotion itself: {', '.join(own)}"))
    for other in classes:
        if other != class_name:
            hits = used[other]
            if hits:
                flags.append(Flag("other-emotion", f"names another emotion ({other}): {', '.join(hits)}"))
    learned = token_count(text) + reserved_tokens
    if learned > context_length:
        flags.append(Flag("too-long", f"{learned} tokens with {reserved_tokens} context tokens; CLIP keeps "
                                      f"{context_length}, the rest is cut off"))
    if templates:
        zs = max(token_count(t.format(name=class_name, description=text.rstrip(".")) + ".") for t in templates)
        if zs > context_length:
            flags.append(Flag("too-long", f"{zs} tokens in the longest zero-shot template; CLIP keeps "
                                          f"{context_length}, the rest is cut off"))
    return tuple(flags)


# --- generation ------------------------------------------------------------------------------------
@dataclass
class Generation:
    """What an LLM wrote: descriptions per class, the prompts that were sent, the raw replies, flags."""

    classes: list[str]
    descriptions: list[list[str]]
    prompts: list[str]
    replies: list[str]
    flags: list[list[list[Flag]]]  # per class, per description
    provenance: dict

    def to_description_set(self, name: str = "generated", class_set: str = "custom"):
        from .descriptions import DescriptionSet

        return DescriptionSet(classes=list(self.classes), descriptions=self.descriptions, name=name,
                              class_set=class_set, provenance=dict(self.provenance))


def translate_error(e: Exception, settings: LLMSettings) -> LLMError:
    """openai's exceptions -> our typed errors with plain messages (never containing the key)."""
    import openai

    where = settings.describe()  # never the key, never URL credentials
    if isinstance(e, openai.APITimeoutError):
        return LLMTimeoutError(f"{where} did not answer within the {settings.timeout:g} s deadline; try again "
                               "later")
    if isinstance(e, openai.APIConnectionError):
        return LLMConnectionError(f"cannot reach {where}: is the server running and the base URL right?")
    if isinstance(e, openai.RateLimitError):
        return LLMRateLimitError(f"{where} answered 429: rate limit or quota exceeded; wait a moment and retry")
    if isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return LLMConfigError(f"{where} refused the API key ({e.status_code})")
    if isinstance(e, openai.NotFoundError):
        return LLMConfigError(f"{where}: model or endpoint not found (404); check the model name and base URL")
    if isinstance(e, openai.APIStatusError) and 300 <= e.status_code < 400:  # the target is never shown
        return LLMConfigError(f"{where} answered with a redirect ({e.status_code}); redirects are not followed: "
                              "type the server's final base URL")
    if isinstance(e, openai.APIStatusError):
        kind = "server error" if e.status_code >= 500 else "request refused"
        return LLMServerError(f"{where}: {kind} ({e.status_code}); try again later")
    if isinstance(e, openai.APIResponseValidationError):
        return LLMReplyError(f"{where} sent a malformed reply")
    return LLMReplyError(f"{where}: unexpected reply ({type(e).__name__})")


def _is_schema_refusal(e: Exception) -> bool:
    import openai

    return isinstance(e, (openai.BadRequestError, openai.UnprocessableEntityError)) and (
        "response_format" in str(e) or "json_schema" in str(e) or "schema" in str(e).lower()
    )


def _stopped(limits, settings: LLMSettings) -> Optional[LLMError]:
    """The error for a call its limits stopped (llm_http.CallLimits.stopped), or None."""
    where = settings.describe()
    return {
        "cancelled": LLMCancelledError("cancelled while waiting for the server"),
        "deadline": LLMTimeoutError(f"{where} did not answer within the {settings.timeout:g} s deadline; try "
                                    "again later"),
        "too-large": LLMReplyError(f"{where} sent a reply larger than {limits.max_bytes // 1024} kB"),
        "private-address": LLMConfigError(f"{where} resolves to an address in the app server's own network; on a "
                                          "public app a typed base URL must be a public server"),
    }.get(limits.stopped)


def _retry_wait(e: Exception, attempt: int) -> Optional[float]:
    """Seconds to wait before retrying after ``e`` (connection failures, 429, 5xx), or None: do not retry."""
    import openai

    if isinstance(e, openai.APITimeoutError):
        return None
    if isinstance(e, (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)):
        return min(4.0, 0.5 * 2 ** attempt)
    return None


def _request(client, settings: LLMSettings, kwargs: dict, user: str, structured: bool):
    """(response, structured) of one request. A server refusing json_schema output is asked again in text; one
    that takes ``max_completion_tokens`` instead of ``max_tokens`` (OpenAI's reasoning models) again with it."""
    import openai

    for _ in range(3):
        extra = {"response_format": {"type": "json_schema", "json_schema": RESPONSE_SCHEMA}} if structured else {}
        try:
            return client.chat.completions.create(**kwargs, **extra), structured
        except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
            if "max_tokens" in kwargs and "max_completion_tokens" in str(e):
                kwargs["max_completion_tokens"] = kwargs.pop("max_tokens")
            elif structured and _is_schema_refusal(e):
                log.info("server refused json_schema output; asking for plain text")
                structured = False
                kwargs["messages"][-1] = {"role": "user", "content": user + _JSON_HINT}
            else:
                raise
    return client.chat.completions.create(**kwargs), structured


def call_server(settings: LLMSettings, send: Callable[[], object], cancel=None):
    """``send()`` (a request through a :func:`make_client` client) within one deadline (``settings.timeout``)
    for it, its retries (connection failures, 429, 5xx; at most ``settings.max_retries``) and their waits, which
    stop as soon as ``cancel`` is set. Returns what ``send`` returns; errors are typed (:class:`LLMError`)."""
    import openai

    from .llm_http import call_limits

    with call_limits(settings.timeout, cancel) as limits:
        attempt = 0
        while True:
            try:
                return send()
            except openai.OpenAIError as e:
                stopped = _stopped(limits, settings)
                if stopped is not None:
                    raise stopped from None
                wait = _retry_wait(e, attempt)
                if wait is None or attempt >= settings.max_retries or wait >= limits.left():
                    raise translate_error(e, settings) from None
                attempt += 1
                if cancel is not None and cancel.wait(wait):
                    raise LLMCancelledError("cancelled while waiting to retry") from None
                if cancel is None:
                    time.sleep(wait)
            except ValueError:  # a body that is not JSON (json.JSONDecodeError)
                raise LLMReplyError(f"{settings.describe()} sent a reply that is not JSON") from None


def complete(client, settings: LLMSettings, system: str, user: str, cancel=None) -> tuple[str, bool]:
    """One chat completion; returns (reply text, whether structured output was used). A local ``client``
    (:class:`dferclip.text.local_llm.LocalChat`) answers the prompts as given (no structured output) and stops
    early once ``cancel`` is set. A server gets ``max_tokens`` and one deadline (``settings.timeout``) for the
    request, its retries (connection failures, 429, 5xx; ``settings.max_retries``) and their waits; it stops
    waiting as soon as ``cancel`` is set. Its reply must be at most :data:`MAX_REPLY_CHARS` characters."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if settings.backend == "local":
        return client.reply(messages, temperature=settings.temperature, max_new_tokens=settings.max_new_tokens,
                            cancel=cancel), False
    kwargs = {"model": settings.model, "messages": messages, "temperature": settings.temperature,
              "max_tokens": settings.max_tokens or reply_tokens(1)}
    resp, structured = call_server(settings, lambda: _request(client, settings, kwargs, user, settings.structured),
                                   cancel)
    try:
        content = resp.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        raise LLMReplyError(f"{settings.describe()} sent a reply without a message") from None
    if not isinstance(content, str):
        raise LLMReplyError(f"{settings.describe()} sent a reply without text")
    if len(content) > MAX_REPLY_CHARS:
        raise LLMReplyError(f"{settings.describe()} sent a reply of {len(content)} characters; at most "
                            f"{MAX_REPLY_CHARS} are read")
    return content, structured


def bounded_descriptions(found: Sequence[str]) -> list[str]:
    """A reply's descriptions within the description-set bounds: at most MAX_DESCRIPTIONS_PER_CLASS, each cut to
    MAX_TEXT_CHARS characters (at a word boundary where there is one)."""
    out = []
    for text in list(found)[:MAX_DESCRIPTIONS_PER_CLASS]:
        if len(text) > MAX_TEXT_CHARS:
            cut = text[:MAX_TEXT_CHARS]
            text = cut.rsplit(" ", 1)[0] if " " in cut else cut
        out.append(text)
    return out


def generate(
    classes: Sequence[str],
    style: str = DEFAULT_STYLE,
    *,
    settings: Optional[LLMSettings] = None,
    client=None,
    client_factory: Optional[Callable[[LLMSettings], object]] = None,
    template: Optional[str] = None,
    system: Optional[str] = None,
    n: Optional[int] = None,
    only: Optional[Sequence[str]] = None,
    reserved_tokens: int = 8,
    progress: Optional[Callable[[int, int, str], None]] = None,
    cancel=None,
    before_request: Optional[Callable[[int, str], None]] = None,
) -> Generation:
    """Ask the model for descriptions of each class (or of the classes in ``only``).

    ``template``/``system`` replace the style's prompts (the user may edit them); ``client`` or
    ``client_factory(settings)`` supply the client (default: :func:`make_chat_client`). ``cancel``: a
    ``threading.Event``; once set, generation stops (a local model within a token, a server within
    ``llm_http.READ_SLICE_S``) with :class:`LLMCancelledError`, whose ``partial`` holds the classes already
    finished. ``before_request(i, class)``: called before each class's request (e.g. to take a rate-limit token;
    it may wait, and raise to stop).

    Every prompt is rendered and checked (template, system text, n, rendered size) before the first request.
    """
    settings = settings or LLMSettings.from_env()
    st = get_style(style)
    template = template if template is not None else st.user
    system = check_length("system prompt", system if system is not None else st.system, MAX_SYSTEM_CHARS)
    n = int(n or st.n)
    if not 1 <= n <= MAX_DESCRIPTIONS_PER_CLASS:
        raise LLMConfigError(f"ask for 1 to {MAX_DESCRIPTIONS_PER_CLASS} descriptions per class, not {n}")
    targets = [c for c in classes if only is None or c in only]
    rendered = [render_prompt(template, cls, classes, n) for cls in targets]
    if settings.backend == "local":
        from .local_llm import reply_budget

        settings = replace(settings, max_new_tokens=reply_budget(settings.max_new_tokens, n))
    else:
        settings = replace(settings, max_tokens=settings.max_tokens or reply_tokens(n))
    if client is None:
        client = (client_factory or make_chat_client)(settings)
    prompts, replies, descs, flags = [], [], [], []
    structured_used = settings.structured and settings.backend != "local"

    def result() -> Generation:
        return Generation(list(targets[: len(descs)]), descs, prompts, replies, flags,
                          _provenance(settings, style, system, template, n, structured_used))

    for i, cls in enumerate(targets):
        if progress:
            progress(i, len(targets), cls)
        if cancel is not None and cancel.is_set():
            raise LLMCancelledError(f"cancelled after {i} of {len(targets)} classes", partial=result())
        if before_request is not None:
            before_request(i, cls)
        user = rendered[i]
        try:
            reply, structured_used = complete(client, settings, system, user, cancel=cancel)
        except LLMCancelledError:
            raise LLMCancelledError(f"cancelled after {i} of {len(targets)} classes", partial=result()) from None
        if cancel is not None and cancel.is_set():  # the reply may be cut short: keep only finished classes
            raise LLMCancelledError(f"cancelled after {i} of {len(targets)} classes", partial=result())
        if not structured_used:
            settings = replace(settings, structured=False)  # remember for the session's next classes
        found = bounded_descriptions(parse_descriptions(reply, cls))
        prompts.append(user)
        replies.append(reply)
        descs.append(found)
        flags.append([check_description(d, cls, classes, reserved_tokens=reserved_tokens) for d in found])
    return result()


def _provenance(settings: LLMSettings, style: str, system: str, template: str, n: int, structured: bool) -> dict:
    if settings.backend == "local":
        from .local_llm import get_local_model, provenance

        source = provenance(get_local_model(settings.local_model))
    else:
        source = {"model": settings.model, "base_url": redact_url(settings.base_url or OPENAI_URL)}
    return {
        "generated_by": {
            **source,
            "prompt_style": style,
            "system_prompt": system,
            "prompt": template,
            "n": n,
            "temperature": settings.temperature,
            "structured_output": structured,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    }
