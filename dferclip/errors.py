"""Typed errors of dferclip.

Every error the library raises on purpose derives from :class:`DferclipError`, whose message is plain
text fit to show to a user as is (``str(err)``). Callers pick the subclass to decide what to do.
"""
from __future__ import annotations


class DferclipError(Exception):
    """Base class of dferclip's own errors; ``message`` is a plain sentence for the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class VideoError(DferclipError):
    """The input could not be used as a video."""


class NotAVideoError(VideoError):
    """The file is not a video at all (text, audio only, unknown format, empty file)."""


class ImageNotVideoError(NotAVideoError):
    """The file is a still image (JPEG, PNG, single-frame GIF, ...), not a video."""


class CorruptVideoError(VideoError):
    """The file looks like a video but is truncated or damaged."""


class VideoTooShortError(VideoError):
    """The video has no decodable frame."""


class VideoTooLargeError(VideoError):
    """The file size, resolution, duration or frame count exceeds :class:`dferclip.video.Limits`."""


class DecodeTimeoutError(VideoError):
    """Decoding took longer than ``Limits.decode_timeout_s``."""


class TextTooLongError(DferclipError):
    """A text someone sent (a prompt template, a descriptor, an LLM's reply) is longer than its bound."""


class NoFaceFoundError(DferclipError):
    """No face was detected in the sampled frames and the caller asked for ``fallback="error"``."""


# --- checkpoints / models / descriptions (used by dferclip.checkpoints and friends) -----------
class CheckpointError(DferclipError):
    """A weights file or source that cannot be used (foreign, truncated, unsafe, mismatched)."""


class WeightsUnavailableError(CheckpointError):
    """Weights must be downloaded but cannot be (offline, unknown repo, missing file)."""


class WeightsDownloadError(WeightsUnavailableError):
    """A download of published weights failed; ``reason`` says how ("quota", "virus-scan", "permission",
    "not-found", "html", "http", "interrupted") and the message what to do."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class DescriptionError(DferclipError):
    """A description set that is malformed, mismatched with the model, or badly named."""


# --- LLM description generation (dferclip.llm) ------------------------------------------------
class LLMError(DferclipError):
    """Generating descriptions with a language model failed; the rest keeps working."""


class LLMConfigError(LLMError):
    """No key, no model or no base URL to talk to, or the key was refused."""


class LLMConnectionError(LLMError):
    """The server cannot be reached."""


class LLMTimeoutError(LLMError):
    """The server did not answer in time."""


class LLMRateLimitError(LLMError):
    """The server answered 429 (rate limit or quota)."""


class LLMServerError(LLMError):
    """The server answered with an error status (5xx, or a request it refused)."""


class LLMReplyError(LLMError):
    """The reply holds no usable descriptions."""


class LLMCancelledError(LLMError):
    """The caller cancelled generation; ``partial`` is what was finished before (a ``Generation``, or None)."""

    def __init__(self, message: str, partial=None):
        super().__init__(message)
        self.partial = partial


# --- datasets and training -------------------------------------------------------------------
class DataError(DferclipError):
    """A dataset or annotation list that cannot be used (missing, malformed, empty)."""


class TrainingError(DferclipError):
    """A training or evaluation setup that cannot run (bad config, incompatible checkpoint)."""


class CaptionError(DferclipError):
    """Describing a clip failed."""
