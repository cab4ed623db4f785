"""Who computes when: visitors' quick requests first, long jobs one piece at a time, one long job per visitor.

Gradio queues events per concurrency group; the app puts predicts, quick workbench calls and long jobs in
groups of their own (``AppContext.groups``), so none waits in another's queue. They then share the CPU, and
this module decides how:

- **Quick work** (a predict, a model switch, a re-score of a small edit, a live frame) runs at once, inside
  :meth:`Scheduler.quick`, which counts it. Quick work that turns out big (a re-score of hundreds of new
  descriptions: more than ``QUICK_PIECES`` pieces) becomes a long job from then on.
- **Long work** (explanations, evaluation sets, generation, big re-scores, annotated videos) runs inside
  :meth:`Scheduler.long`: a visitor has at most one in flight (a second one is refused with a message
  naming the first), and it computes only while it holds *the turn*. The turn goes to long jobs in the order
  they asked for it, and only while no quick work runs (or after ``max_defer_s`` of waiting, so quick work
  never starves a long job). Long loops give the turn back at every ``dferclip.pacing.checkpoint``, so two
  visitors' long jobs interleave piece by piece and a predict that arrives waits for one piece at most.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator, Optional

from .. import pacing
from ..errors import DferclipError


QUICK_PIECES = 2  # pacing checkpoints quick work may pass before it counts as a long job


class BusyError(DferclipError):
    """The visitor already has a long job running."""


class Scheduler:
    def __init__(self, max_defer_s: float = 2.0):
        self.max_defer_s = max_defer_s
        self._cond = threading.Condition()
        self._quick = 0  # quick jobs running now
        self._holder: Optional[object] = None  # the long job piece that holds the turn
        self._fresh = False  # the holder has passed no checkpoint since it took the turn
        self._waiting: deque = deque()  # long jobs asking for the turn, first come first served
        self._jobs: dict[str, str] = {}  # session -> what its long job is

    # --- quick work -----------------------------------------------------------------------------
    @contextmanager
    def quick(self, session: Optional[str] = None, grows_into: str = "re-score",
              pieces: int = QUICK_PIECES) -> Iterator[None]:
        """Quick work: runs at once. With ``session``, work that passes more than ``pieces`` pacing
        checkpoints (a re-score of many new descriptions) turns into that visitor's long job, ``grows_into``,
        from then on. Leave ``session`` out for generators (their steps may run on other threads)."""
        grown: list = []  # the turn token once grown into a long job
        passed = 0

        def checkpoint():
            nonlocal passed
            if grown:
                self._give_way(grown[0])
                return
            passed += 1
            if passed > pieces:
                self._grow(session, grows_into)
                grown.append(object())
                self._acquire(grown[0])

        with self._cond:
            self._quick += 1
        try:
            if session is None:
                yield
            else:
                with pacing.paced(checkpoint):
                    yield
        finally:
            with self._cond:
                if grown:
                    if self._holder is grown[0]:
                        self._holder = None
                    self._jobs.pop(session, None)
                else:
                    self._quick -= 1
                self._cond.notify_all()

    def _grow(self, session: str, what: str) -> None:
        with self._cond:
            self._claim(session, what)
            self._quick -= 1

    def _claim(self, session: str, what: str) -> None:
        running = self._jobs.get(session)
        if running is not None:
            raise BusyError(f"your {running} is still running: one long job at a time per visitor; "
                            "wait for it to finish (or cancel it), then try again")
        self._jobs[session] = what

    # --- long work ------------------------------------------------------------------------------
    @contextmanager
    def long(self, session: str, what: str, *, turn: bool = True) -> Iterator[None]:
        """A visitor's long job. With ``turn`` (the default) the block computes holding the turn and gives it
        back at every pacing checkpoint; without it, the block takes :meth:`turn` around its own computing
        parts (e.g. generation, which mostly waits for an LLM server)."""
        with self._cond:
            self._claim(session, what)
        try:
            if turn:
                with self.turn():
                    yield
            else:
                yield
        finally:
            with self._cond:
                self._jobs.pop(session, None)

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Compute holding the turn; pacing checkpoints inside give way to quick work and other long jobs."""
        me = object()
        self._acquire(me)
        with self._cond:
            self._fresh = True  # its first checkpoint keeps the turn: a piece runs on every turn taken
        try:
            with pacing.paced(lambda: self._give_way(me)):
                yield
        finally:
            self._release(me)

    def _acquire(self, me: object) -> None:
        asked = time.monotonic()
        with self._cond:
            self._waiting.append(me)
            while True:
                waited = time.monotonic() - asked
                if (self._holder is None and self._waiting[0] is me
                        and (self._quick == 0 or waited >= self.max_defer_s)):
                    break
                self._cond.wait(timeout=max(0.01, min(0.25, self.max_defer_s - waited)))
            self._waiting.popleft()
            self._holder = me

    def _release(self, me: object) -> None:
        with self._cond:
            if self._holder is me:
                self._holder = None
            self._cond.notify_all()

    def _give_way(self, me: object) -> None:
        with self._cond:
            fresh = self._fresh
            self._fresh = False
            if fresh or not self._waiting and self._quick == 0:
                return  # the turn was just taken (one piece runs on it), or nobody else wants the CPU
        self._release(me)
        self._acquire(me)

    # --- what is going on (tests, logs) ---------------------------------------------------------
    def snapshot(self) -> dict:
        with self._cond:
            return {"quick": self._quick, "long_jobs": dict(self._jobs), "waiting": len(self._waiting),
                    "turn_held": self._holder is not None}
