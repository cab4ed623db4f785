"""Expected user errors: a red toast for the visitor, one log line for the server (no traceback)."""
from __future__ import annotations

import logging

import gradio as gr

log = logging.getLogger("dferclip.ui")


def user_error(error: BaseException | str) -> gr.Error:
    """A ``gr.Error`` for an expected problem (bad input, a ``DferclipError``): shown to the visitor and logged
    as one line; Gradio would print a full traceback for a plain ``gr.Error``."""
    message = str(error)
    log.info("user error: %s", message[:300])
    return gr.Error(message, print_exception=False)
