"""Errors a user can cause. Each carries a plain message meant to be shown as is (CLI, app)."""


class DferclipError(Exception):
    """Base class of all errors a user can cause."""


# --- checkpoints / models --------------------------------------------------------------------
class CheckpointError(DferclipError):
    """A weights file or source that cannot be used (foreign, truncated, unsafe, mismatched)."""


class WeightsUnavailableError(CheckpointError):
    """Weights must be downloaded but cannot be (offline, unknown repo, missing file)."""


# --- descriptions ----------------------------------------------------------------------------
class DescriptionError(DferclipError):
    """A description set that is malformed, mismatched with the model, or badly named."""


# --- video ingestion -------------------------------------------------------------------------
class VideoError(DferclipError):
    """Base class of video input problems."""


class NotAVideoError(VideoError):
    pass


class ImageNotVideoError(NotAVideoError):
    pass


class CorruptVideoError(VideoError):
    pass


class VideoTooShortError(VideoError):
    pass


class VideoTooLargeError(VideoError):
    pass
