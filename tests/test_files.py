"""The library writes folders (a saved model, a clip's frames) whole or not at all, and always has a cache to write."""
from pathlib import Path

import pytest

from dferclip.files import atomic_folder


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_folder_refuses_a_used_folder_and_swaps_it_whole_when_asked(tmp_path):
    out = tmp_path / "model"
    with atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("first")
        assert not out.exists()  # nothing shows until the folder is complete
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(FileExistsError):
        with atomic_folder(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_folder(out, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("second")
            raise RuntimeError("the writer fails")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    with atomic_folder(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]  # no mix of old and new files
    assert _leftovers(tmp_path) == []
    (tmp_path / "empty").mkdir()
    with atomic_folder(tmp_path / "empty") as tmp:  # an empty folder holds nothing to lose
        (tmp / "c.txt").write_text("x")
    assert (tmp_path / "empty" / "c.txt").is_file()


def test_an_unwritable_home_caches_in_a_temporary_folder(tmp_path):
    """With HOME under a file (nothing can be made there, not even by root) the cache is a folder of the
    process's own, usable, and gone when it exits; a writable HOME keeps ~/.cache/dferclip."""
    import os
    import subprocess
    import sys

    (tmp_path / "a-file").write_text("")
    script = ("from dferclip import files; d = files.cache_dir(); files.write_json(d / 'x.json', {}); "
              "print(d); assert files.cache_dir() == d")
    env = {k: v for k, v in os.environ.items() if k not in ("DFERCLIP_CACHE", "XDG_CACHE_HOME", "SPACE_ID")}
    for home, under_home in ((tmp_path / "a-file" / "home", False), (tmp_path / "home", True)):
        proc = subprocess.run([sys.executable, "-c", script], env={**env, "HOME": str(home)}, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        used = Path(proc.stdout.strip())
        if under_home:
            assert used == home / ".cache" / "dferclip" and (used / "x.json").is_file()
        else:
            assert not used.is_relative_to(home) and not used.exists()  # removed at exit
            assert "cannot be written" in proc.stderr
