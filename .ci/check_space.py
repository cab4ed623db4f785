#!/usr/bin/env python3
"""The Space builds as declared: run by .ci/run before the tests, with any Python 3.11+ (standard library and pip).

Checks, for the README's front matter (what a Hugging Face Space reads):

- ``sdk_version`` is the gradio pinned in requirements.txt;
- ``python_version`` is one of the versions pyproject declares (its ``Programming Language :: Python :: 3.x``
  classifiers), and ``requires-python`` admits each of them;
- for each declared version, ``requirements.txt`` and the Makefile's ``--no-deps`` packages resolve to wheels on
  Linux x86_64 (``pip install --dry-run --only-binary=:all: --python-version ...``), as a Space's
  ``pip install`` and ``make`` need.

    python3 .ci/check_space.py            # all of the above (downloads the wheels' metadata: about a minute each)
    python3 .ci/check_space.py --static   # only the front matter against the pins (no registry)
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Linux x86_64 wheels a glibc 2.36 machine (Debian 12) takes; pip does not expand an explicit --platform itself
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)] + ["manylinux2014_x86_64",
                                                                             "linux_x86_64"]


def front_matter(readme: Path) -> dict[str, str]:
    """The ``key: value`` lines between the README's opening ``---`` lines (quotes removed)."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != "---":
        raise SystemExit(f"{readme.name}: no front matter")
    fields = {}
    for line in lines[1:]:
        if line.strip() == "---":
            return fields
        key, sep, value = line.partition(":")
        if sep and not line.startswith((" ", "\t", "#")):
            fields[key.strip()] = value.strip().strip("\"'")
    raise SystemExit(f"{readme.name}: front matter not closed")


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def pinned(requirements: list[str], name: str) -> str | None:
    for req in requirements:
        m = re.fullmatch(rf"{re.escape(name)}\s*==\s*([^\s;]+)", req, flags=re.IGNORECASE)
        if m:
            return m.group(1)
    return None


def no_deps_packages(makefile: Path) -> list[str]:
    m = re.search(r"^NODEPS\s*:?=\s*(.+)$", makefile.read_text(), flags=re.MULTILINE)
    return m.group(1).split() if m else []


def declared_versions(project: dict) -> list[str]:
    prefix = "Programming Language :: Python :: "
    return [c[len(prefix):] for c in project.get("classifiers", [])
            if c.startswith(prefix) and re.fullmatch(r"3\.\d+", c[len(prefix):])]


def admits(requires_python: str, version: str) -> bool:
    """Whether ``requires-python`` (comma-separated >=, <, ==, != clauses on X.Y) admits Python ``version``."""
    have = tuple(int(p) for p in version.split("."))
    for clause in filter(None, (c.strip() for c in requires_python.split(","))):
        m = re.fullmatch(r"(>=|<=|==|!=|<|>)\s*(\d+(?:\.\d+)*)(\.\*)?", clause)
        if not m:
            raise SystemExit(f"requires-python clause {clause!r}: not understood here")
        op, want = m.group(1), tuple(int(p) for p in m.group(2).split("."))
        mine = have[:len(want)] if op in ("==", "!=") else have + (0,) * (len(want) - len(have))
        ok = {">=": mine >= want, "<=": mine <= want, "==": mine == want, "!=": mine != want,
              "<": mine < want, ">": mine > want}[op]
        if not ok:
            return False
    return True


def resolve(version: str, args: list[str], repo: Path) -> tuple[bool, str]:
    """``pip install --dry-run`` of ``args`` for CPython ``version`` on Linux x86_64, wheels only."""
    with tempfile.TemporaryDirectory(prefix="check-space-") as target:  # pip 23 wants --target with these
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--disable-pip-version-check",
               "--target", target, "--python-version", version, "--implementation", "cp", "--only-binary=:all:",
               *(f"--platform={p}" for p in PLATFORMS), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    out = proc.stdout + proc.stderr
    if proc.returncode:
        errors = [line for line in out.splitlines() if line.startswith("ERROR")]
        return False, "\n".join(errors[-4:]) or out[-2000:]
    would = [line for line in out.splitlines() if line.startswith("Would install")]
    return True, would[-1] if would else "nothing to install"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--static", action="store_true", help="skip resolving with pip (no registry needed)")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout to check (default: this one)")
    args = parser.parse_args(argv)
    repo = args.repo

    meta = front_matter(repo / "README.md")
    requirements = requirement_lines(repo / "requirements.txt")
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    versions = declared_versions(project)
    problems = []

    gradio = pinned(requirements, "gradio")
    if gradio is None or meta.get("sdk_version") != gradio:
        problems.append(f"README sdk_version {meta.get('sdk_version')!r} is not requirements.txt's gradio=={gradio}")
    space_python = meta.get("python_version")
    if not versions:
        problems.append("pyproject declares no 'Programming Language :: Python :: 3.x' classifier")
    if space_python not in versions:
        problems.append(f"README python_version {space_python!r} is not one of pyproject's {versions}")
    for v in versions:
        if not admits(project.get("requires-python", ""), v):
            problems.append(f"requires-python {project.get('requires-python')!r} excludes declared Python {v}")
    print(f"front matter: sdk_version {meta.get('sdk_version')}, python_version {space_python}; "
          f"declared Pythons {', '.join(versions)}")

    if not args.static:
        no_deps = no_deps_packages(repo / "Makefile")
        for v in versions:
            for what, pip_args in (("requirements.txt", ["-r", "requirements.txt"]),
                                   (f"--no-deps {' '.join(no_deps)}", ["--no-deps", *no_deps])):
                ok, detail = resolve(v, pip_args, repo)
                print(f"Python {v}, {what}: {'resolves' if ok else 'DOES NOT RESOLVE'}")
                if not ok:
                    problems.append(f"Python {v}: {what} does not resolve on Linux x86_64:\n{detail}")
                elif any(w.startswith("torch-") for w in detail.split()):
                    print("  " + " ".join(w for w in detail.split() if w.startswith(("torch-", "torchvision-"))))

    for p in problems:
        print(f"check_space: {p}", file=sys.stderr)
    print("check_space: " + ("FAILED" if problems else "the Space builds as declared"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
