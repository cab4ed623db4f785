"""Give-way points inside long loops, so a server running them can let other work go first.

Library loops that can run for long (text encoding in chunks, embedding an evaluation set clip by clip,
writing an annotated video) call :func:`checkpoint` between pieces. It does nothing unless the calling thread
runs under :func:`paced`, which the app uses to pause a visitor's long job while other visitors' quick
requests run (``dferclip.ui.scheduler``)::

    with paced(give_way):
        embed_clips(...)        # give_way() runs between clips, in this thread
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

_local = threading.local()


def checkpoint() -> None:
    """A point where the current piece of work is done and the next has not started: the thread's hook
    (if any) may pause here."""
    hook: Optional[Callable[[], None]] = getattr(_local, "hook", None)
    if hook is not None:
        hook()


@contextmanager
def paced(hook: Callable[[], None]) -> Iterator[None]:
    """Run the block with ``hook`` called at every :func:`checkpoint` of this thread."""
    previous = getattr(_local, "hook", None)
    _local.hook = hook
    try:
        yield
    finally:
        _local.hook = previous
