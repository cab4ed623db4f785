"""Where log records go: standard error, as it is at each write.

Entry points (``python -m dferclip``, ``app.py``) call :func:`configure`; the library only makes loggers. A
handler that keeps the ``sys.stderr`` of the moment it was made goes on writing to (or closing) that stream
after the process has swapped it: pytest swaps it for every test, notebooks and embedding programs may too.
"""
from __future__ import annotations

import logging
import sys

FORMAT = "%(levelname)s %(name)s: %(message)s"
HANDLER_NAME = "dferclip-stderr"


class CurrentStderr:
    """A file-like stand-in for whatever ``sys.stderr`` is at each call. Closing it leaves ``sys.stderr`` open:
    the process's stream is not a handler's to close."""

    def write(self, text: str) -> int:
        stream = sys.stderr
        return stream.write(text) if stream is not None else 0

    def flush(self) -> None:
        if sys.stderr is not None:
            sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr is not None and sys.stderr.isatty()

    def close(self) -> None:
        pass


def configure(level: int = logging.WARNING) -> None:
    """Log records of ``level`` and above to standard error. Calling it again only changes the level; a process
    whose root logger another program set up already is left alone (as :func:`logging.basicConfig` does)."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if h.get_name() == HANDLER_NAME]
    if not ours and root.handlers:
        return
    if not ours:
        handler = logging.StreamHandler(CurrentStderr())
        handler.set_name(HANDLER_NAME)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
