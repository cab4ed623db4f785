"""Where the library's files live, and the one way it writes them (atomically).

- Shipped, read-only data (class sets, prompt styles, configs) is package data. The shipped description sets
  are the repository's top-level ``descriptions/`` folder, the one copy in git; a wheel carries it as
  ``dferclip/_shipped_descriptions/`` (pyproject maps the folder there): :func:`shipped_descriptions_dir`.
- The user's own files: ``checkpoints/`` and ``descriptions/local/`` in the working folder (git-ignored in the
  repository, so saving never dirties it), or ``DFERCLIP_CHECKPOINTS`` and ``DFERCLIP_DESCRIPTIONS``.
- Caches (downloaded weights, embeddings): ``DFERCLIP_CACHE``, else ``/data/dferclip-cache`` on a Space with
  persistent storage, else ``$XDG_CACHE_HOME/dferclip`` (``~/.cache/dferclip``); when that cannot be written
  (a container's read-only HOME), a temporary folder of the process's own, removed at exit, with a warning.
"""
from __future__ import annotations

import atexit
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

PACKAGE_DIR = Path(__file__).resolve().parent


def checkpoints_dir() -> Path:
    return Path(os.environ.get("DFERCLIP_CHECKPOINTS") or "checkpoints").resolve()


def user_descriptions_dir() -> Path:
    return Path(os.environ.get("DFERCLIP_DESCRIPTIONS") or os.path.join("descriptions", "local")).resolve()


def shipped_descriptions_dir() -> Path:
    """The shipped description sets (read-only): inside an installed wheel, else the source tree's
    ``descriptions/``."""
    installed = PACKAGE_DIR / "_shipped_descriptions"
    return installed if installed.is_dir() else PACKAGE_DIR.parent / "descriptions"


def cache_dir() -> Path:
    if os.environ.get("DFERCLIP_CACHE"):
        return Path(os.environ["DFERCLIP_CACHE"]).resolve()
    if os.environ.get("SPACE_ID") and os.path.isdir("/data") and os.access("/data", os.W_OK):
        return Path("/data/dferclip-cache")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "dferclip"
    return folder if _can_create(folder) else _temporary_cache(folder)


def _can_create(folder: Path) -> bool:
    """Whether ``folder`` is, or could be made as, a writable folder: its nearest existing ancestor is one."""
    for path in (folder, *folder.parents):
        if path.exists():
            return path.is_dir() and os.access(path, os.W_OK | os.X_OK)
    return False


_temporary: list[Path] = []  # this process's stand-in cache, made once
_temporary_lock = threading.Lock()


def _temporary_cache(wanted: Path) -> Path:
    with _temporary_lock:
        if not _temporary:
            _temporary.append(Path(tempfile.mkdtemp(prefix="dferclip-cache-")))
            atexit.register(shutil.rmtree, _temporary[0], ignore_errors=True)
            logging.getLogger(__name__).warning(
                "%s cannot be written; caching in %s until this process exits (set DFERCLIP_CACHE to keep a cache)",
                wanted, _temporary[0])
        return _temporary[0]


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one step, on any error it is
    removed and ``path`` is untouched. ``mode``: "w" (text, UTF-8) or "wb"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_with(path: str | Path, writer: Callable[[str], None]) -> None:
    """For writers that take a file name (``torch.save``, ``safetensors.save_file``): ``writer(tmp_name)``,
    then the same replace-or-remove as :func:`atomic_write`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh hidden folder beside ``path`` to fill; on success it becomes ``path`` in one rename, on
    any error it is removed and ``path`` is untouched. An existing non-empty ``path`` raises FileExistsError
    unless ``overwrite``: then it is swapped out (renamed aside, the new folder renamed in, the old one
    removed), so ``path`` never holds a mix of old and new files. If the new folder cannot be renamed in, the
    old one is renamed back; one left aside by a process killed between the two renames is restored on the
    next call."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    restore_set_aside(path)
    if path.exists() and not overwrite and not (path.is_dir() and not any(path.iterdir())):
        raise FileExistsError(f"{path} already exists")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old / path.name, path)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def restore_set_aside(path: str | Path) -> bool:
    """Put back a folder that :func:`atomic_folder` renamed aside when ``path`` is missing (a process killed
    between its two renames); True if one was restored. Set-aside copies of a present ``path`` are removed."""
    path = Path(path)
    aside = [d / path.name for d in path.parent.glob(f".{glob.escape(path.name)}.*.old") if (d / path.name).exists()]
    if not aside:
        return False
    restored = False
    if not path.exists():
        newest = max(aside, key=lambda p: p.stat().st_mtime)
        os.replace(newest, path)
        restored = True
        logging.getLogger(__name__).warning("%s: restored the copy set aside by an interrupted replace", path)
    for d in {p.parent for p in aside}:
        shutil.rmtree(d, ignore_errors=True)
    return restored


def write_json(path: str | Path, data: Any, indent: int = 2) -> Path:
    with atomic_write(path) as f:
        json.dump(data, f, indent=indent, ensure_ascii=False)
        f.write("\n")
    return Path(path)


def prune_folders(root: str | Path, keep: int) -> None:
    """Keep the ``keep`` most recently modified sub-folders of ``root`` (e.g. files served to visitors)."""
    import shutil

    folders = sorted((d for d in Path(root).iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    for old in folders[:max(0, len(folders) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """The file's sha256 (hex), read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
