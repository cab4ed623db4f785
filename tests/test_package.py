"""The package installs from a wheel and runs from any folder: its data files travel inside it."""
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from app_helpers import feat_clip

REPO = Path(__file__).resolve().parent.parent
DATA_FILES = [  # one of each kind the library reads at run time
    "dferclip/models/configs/dferclip-tiny.json",
    "dferclip/text/class_sets.json",
    "dferclip/_shipped_descriptions/dferclip-official-dfew.json",  # the repository's descriptions/
    "dferclip/text/prompts/styles.json",
    "dferclip/training/configs/official.json",
    "dferclip/ui/examples/astronaut_drift.webm",
]


def _run(args, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the sources (no build files left in the repository)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(REPO / "dferclip", src / "dferclip", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "descriptions", src / "descriptions", ignore=shutil.ignore_patterns("local"))
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
          "-q", "-w", str(out), str(src)])
    (found,) = out.glob("dferclip-*.whl")
    return found


def test_the_wheel_holds_the_data_files_and_the_console_script(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in DATA_FILES if f not in names]
    assert not missing, missing
    shipped = {str(p.relative_to(REPO)) for p in (REPO / "dferclip").rglob("*")
               if p.is_file() and p.suffix in (".json", ".webm")}
    assert shipped <= names
    description_sets = {f"dferclip/_shipped_descriptions/{p.name}" for p in (REPO / "descriptions").glob("*.json")}
    assert len(description_sets) >= 3 and description_sets <= names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "dferclip = dferclip.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_package_predicts_from_another_folder(wheel, tmp_path):
    clip = feat_clip("single_face.mp4")
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q",
          "--target", str(target), str(wheel)])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DFERCLIP_CHECKPOINTS")}
    env["PYTHONPATH"] = str(target)  # the repository's copy cannot be imported from here
    where = _run([sys.executable, "-c", "import dferclip; print(dferclip.__file__)"], cwd=elsewhere, env=env)
    assert Path(where.stdout.strip()).is_relative_to(target)
    out = _run([sys.executable, "-m", "dferclip", "predict", str(clip), "--checkpoint", "random:dferclip-tiny",
                "--json", "--no-timeline"], cwd=elsewhere, env=env)
    pred = json.loads(out.stdout)
    assert len(pred["probabilities"]) == 7 and pred["ingestion"]["face_found"]
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # nothing written where it ran


def test_declared_dependencies_are_the_requirements():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    required = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert sorted(declared) == sorted(r for r in required if r)
    assert not any(re.match(r"(facenet-pytorch|mediapipe)\b", d) for d in declared)  # installed --no-deps


def test_every_folder_of_code_is_a_declared_package():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "dferclip").rglob("*.py")}
    folders.discard("dferclip.ui.examples")  # make_examples.py: a maintainer's script beside what it writes
    assert set(setuptools["packages"]) == folders | {"dferclip._shipped_descriptions"}
    assert setuptools["package-dir"] == {"dferclip._shipped_descriptions": "descriptions"}


def test_the_space_front_matter_matches_the_pins(tmp_path):
    """.ci/check_space.py --static: sdk_version is the pinned gradio and python_version a declared Python (CI
    also resolves the pins for each declared Python, which needs the registry)."""
    check = [sys.executable, str(REPO / ".ci" / "check_space.py"), "--static"]
    proc = subprocess.run(check, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("README.md", "requirements.txt", "pyproject.toml", "Makefile"):
        shutil.copy(REPO / name, tmp_path)
    good = (tmp_path / "README.md").read_text()
    for field, wrong in (("sdk_version", "sdk_version: 5.0.0"), ("python_version", 'python_version: "3.10"')):
        (tmp_path / "README.md").write_text(re.sub(rf"^{field}:.*$", wrong, good, count=1, flags=re.MULTILINE))
        proc = subprocess.run([*check, "--repo", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and f"README {field}" in proc.stderr, proc.stdout + proc.stderr
