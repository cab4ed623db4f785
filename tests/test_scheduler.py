"""The app's scheduler on its own: long jobs take turns piece by piece, give way to quick work, and a visitor has
one at a time; quick work that grows becomes a long job (dferclip/ui/scheduler.py)."""
import threading
import time

import pytest

from dferclip import pacing
from dferclip.ui.scheduler import BusyError, Scheduler


def long_job(sched, session, name, pieces, log, started=None, hold=None):
    with sched.long(session, name):
        for i in range(pieces):
            pacing.checkpoint()
            log.append((name, i))
            if started is not None and i == 0:
                started.set()
            if hold is not None:
                hold.wait(10)


def test_two_long_jobs_take_turns_piece_by_piece():
    sched, log = Scheduler(), []
    a_started, release = threading.Event(), threading.Event()
    a = threading.Thread(target=long_job, args=(sched, "a", "A", 4, log, a_started, release))
    a.start()
    assert a_started.wait(10)
    b = threading.Thread(target=long_job, args=(sched, "b", "B", 4, log))
    b.start()
    time.sleep(0.2)  # B asks for the turn while A holds it
    assert [n for n, _ in log] == ["A"]
    release.set()
    a.join(10), b.join(10)
    names = [n for n, _ in log]
    assert sorted(names) == ["A"] * 4 + ["B"] * 4
    assert names[:4] == ["A", "B", "A", "B"]  # interleaved, not A's four pieces first


def test_long_work_waits_while_quick_work_runs():
    sched, log = Scheduler(max_defer_s=30), []
    in_quick, done_quick = threading.Event(), threading.Event()

    def quick():
        with sched.quick():
            in_quick.set()
            done_quick.wait(10)
            log.append("quick done")

    q = threading.Thread(target=quick)
    q.start()
    assert in_quick.wait(10)
    job = threading.Thread(target=long_job, args=(sched, "s", "L", 2, log))
    job.start()
    time.sleep(0.3)
    assert log == []  # the long job has not computed a piece while the quick one runs
    done_quick.set()
    q.join(10), job.join(10)
    assert log == ["quick done", ("L", 0), ("L", 1)]


def test_quick_work_never_starves_a_long_job():
    sched, log = Scheduler(max_defer_s=0.3), []
    stop = threading.Event()

    def busy():
        with sched.quick():
            stop.wait(10)

    q = threading.Thread(target=busy)
    q.start()
    job = threading.Thread(target=long_job, args=(sched, "s", "L", 3, log))
    job.start()
    job.join(10)
    stop.set()
    q.join(10)
    assert log == [("L", 0), ("L", 1), ("L", 2)]  # each piece after waiting max_defer_s at most


def test_one_long_job_per_session_and_the_slot_is_freed():
    sched = Scheduler()
    with sched.long("s", "explanation"):
        with pytest.raises(BusyError, match="your explanation is still running"):
            with sched.long("s", "evaluation set"):
                pass
        with sched.long("other", "evaluation set", turn=False):  # another visitor's is not refused
            pass
    with sched.long("s", "evaluation set"):
        pass
    assert sched.snapshot() == {"quick": 0, "long_jobs": {}, "waiting": 0, "turn_held": False}


def test_quick_work_that_grows_becomes_the_visitors_long_job():
    sched = Scheduler()
    with sched.quick("s", grows_into="re-score", pieces=2):
        pacing.checkpoint()
        pacing.checkpoint()
        assert sched.snapshot()["quick"] == 1
        pacing.checkpoint()  # the third piece: a long job now
        assert sched.snapshot() == {"quick": 0, "long_jobs": {"s": "re-score"}, "waiting": 0, "turn_held": True}
    assert sched.snapshot() == {"quick": 0, "long_jobs": {}, "waiting": 0, "turn_held": False}
    with sched.long("s", "explanation", turn=False):
        with pytest.raises(BusyError, match="explanation"):
            with sched.quick("s"):
                for _ in range(3):
                    pacing.checkpoint()
    assert sched.snapshot() == {"quick": 0, "long_jobs": {}, "waiting": 0, "turn_held": False}


def test_checkpoints_outside_a_scheduler_do_nothing():
    pacing.checkpoint()  # a library loop run by a script
    calls = []
    with pacing.paced(lambda: calls.append(1)):
        pacing.checkpoint()
        seen = []
        t = threading.Thread(target=lambda: (pacing.checkpoint(), seen.append(1)))
        t.start(), t.join()
    pacing.checkpoint()
    assert calls == [1] and seen == [1]  # the hook is this thread's only
