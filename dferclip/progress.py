"""Progress on the terminal, one way for every command: a tqdm bar on stderr when tqdm is installed and stderr
is a terminal, nothing otherwise (logs and pipes stay clean)."""
from __future__ import annotations

import sys
from typing import Any, Callable, Iterable, Optional


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def progress_bar(iterable: Iterable, *, desc: str = "", total: Optional[int] = None, unit: str = "it",
                 enabled: bool = True, leave: bool = True) -> Iterable:
    """``iterable`` with a progress bar (the iterable itself when tqdm is absent or ``enabled`` is False)."""
    tqdm = _tqdm()
    if tqdm is None or not enabled:
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, disable=None, leave=leave,
                dynamic_ncols=True)


def progress_callback(desc: str = "", unit: str = "it") -> Callable[[int, int, Any], None]:
    """A ``progress(i, n, item)`` callback (item ``i`` of ``n`` starts; ``i == n``: all done) drawing one bar."""
    tqdm = _tqdm()
    bar = None

    def update(i: int, n: int, item: Any = None) -> None:
        nonlocal bar
        if tqdm is None:
            return
        if bar is None:
            bar = tqdm(total=n, desc=desc, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)
        bar.n = min(i, n)
        bar.refresh()
        if i >= n:
            bar.close()
            bar = None

    return update


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_counter(total: int, *, desc: str = "", unit: str = "it", enabled: bool = True, position: int = 0):
    """A bar counted by hand (``update(n)``, ``close()``): for work whose items finish out of order or in
    batches; ``position`` puts the bars of several processes (ranks) on their own lines."""
    tqdm = _tqdm()
    if tqdm is None or not enabled:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, position=position, file=sys.stderr, disable=None,
                dynamic_ncols=True)
