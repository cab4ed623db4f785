"""Log output follows ``sys.stderr`` as it is at each write: entry points configure logging once per process,
and no handler made while a test's capture was ``sys.stderr`` writes to or closes that capture afterwards."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dferclip import backends, logs

ROOT = Path(__file__).resolve().parent.parent

# The app's conversion thread, then another test that serves an app while capfd is on (uvicorn's logging
# set-up at each launch closes every handler ever made): the order that crashed pytest ("lost sys.stderr").
CONVERTS = """
import torch
import dferclip
from dferclip import backends

def test_the_image_tower_runs_on_openvino():
    torch.manual_seed(0)
    model = dferclip.load_model("random:dferclip-tiny")
    assert backends.accelerate(model, "openvino").name == "openvino"
"""
SERVES = """
import socket
import gradio as gr

def test_an_app_served_while_capfd_is_on(capfd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with gr.Blocks() as demo:
        gr.Markdown("hello")
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    demo.close()
    assert "Traceback" not in capfd.readouterr().err
"""


@pytest.mark.skipif("openvino" not in backends.installed(), reason="openvino is not installed")
def test_a_conversion_then_an_app_served_under_capfd_keep_pytest_alive(tmp_path):
    (tmp_path / "test_a_converts.py").write_text(CONVERTS)
    (tmp_path / "test_b_serves.py").write_text(SERVES)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               DFERCLIP_CACHE=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
               "test_a_converts.py", "test_b_serves.py"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and "2 passed" in done.stdout, (done.stdout + done.stderr)[-3000:]


def test_entry_point_logging_writes_to_the_current_stderr_and_is_set_up_once(monkeypatch):
    import contextlib
    import io

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # a fresh process's root logger (pytest's handlers put back after)
    monkeypatch.setattr(root, "level", root.level)
    logs.configure()
    logs.configure(logging.INFO)  # a second entry-point call in one process: a new level, not a second handler
    assert [h.get_name() for h in root.handlers] == [logs.HANDLER_NAME] and root.level == logging.INFO
    earlier, now = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(earlier):
        logging.getLogger("dferclip.check").info("one")
    assert earlier.getvalue() == "INFO dferclip.check: one\n"
    earlier.close()  # as pytest closes a finished test's capture
    with contextlib.redirect_stderr(now):
        logging.getLogger("dferclip.check").warning("two")
    assert now.getvalue() == "WARNING dferclip.check: two\n"  # not a "--- Logging error ---" for the closed one

    foreign = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [foreign])  # a program that set up logging itself and calls main()
    logs.configure(logging.DEBUG)
    assert root.handlers == [foreign] and root.level == logging.INFO
