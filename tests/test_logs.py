"""Log output follows ``sys.stderr`` as it is at each write: entry points configure logging once per process,
and no handler made while a test's capture was ``sys.stderr`` writes to or closes that capture afterwards."""
import logging

from dferclip import logs


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
