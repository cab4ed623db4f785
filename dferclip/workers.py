"""DataLoader worker processes run from a library that other threads share: how they start, and the SIGCHLD
handler torch leaves behind."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional


def fork_free_start() -> Optional[str]:
    """Start workers from a fork server where there is one (Linux), not by forking this process. A fork copies
    every lock another thread holds at that moment (an app's server, a face-mesh graph, a backend's thread
    pool, a module being imported) and a worker that needs one waits forever."""
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else None


@contextmanager
def sigchld_kept() -> Iterator[None]:
    """Put back the process's SIGCHLD handler after a DataLoader with workers ran: torch installs a Python
    handler for them and leaves it, so every later child process (a ``subprocess.run``) ran it, and the process
    died (SIGSEGV, SI_KERNEL) once a native library had left a thread's signal stack unusable."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGCHLD) if main else None
    try:
        yield
    finally:
        if main and before is not None and signal.getsignal(signal.SIGCHLD) is not before:
            signal.signal(signal.SIGCHLD, before)
