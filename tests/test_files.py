"""The library writes folders (a saved model, a clip's frames) whole or not at all."""
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
