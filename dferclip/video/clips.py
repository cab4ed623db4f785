"""What a clip is on disk: a video file, or a folder of frame images; its frames in order; its content key."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from ..errors import VideoError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
SOURCE_KEY_FILE = ".clip-key"  # in frame folders extracted from a video: the video's clip_key


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_frames(folder: str | Path) -> list[str]:
    """Image files in a clip folder, in frame order (numbers compared as numbers; the same order as the
    official lexicographic sort for zero-padded names)."""
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    names.sort(key=_natural_key)
    return [os.path.join(folder, n) for n in names]



def clip_key(path: str | Path) -> str:
    """Content hash of a video file, or of a frame folder's images (names and bytes, in frame order). A frame
    folder extracted from a video (:func:`dferclip.training.data.ingest_videos`) has its video's key."""
    p = Path(path)
    stored = p / SOURCE_KEY_FILE
    if p.is_dir() and stored.is_file():
        key = stored.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{32}", key):
            return key
        log.warning("ignoring malformed %s in %s", SOURCE_KEY_FILE, p)
    h = hashlib.blake2b(digest_size=16)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = [Path(f) for f in list_frames(p)]
        if not files:
            raise VideoError(f"no frames in {p}")
    else:
        raise VideoError(f"no such clip: {p}")
    for f in files:
        h.update(f.name.encode() + b"\0" if p.is_dir() else b"")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()
