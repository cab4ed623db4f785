"""Issue 16 without a browser: evaluation labels by class name, number labels only for the set they index,
the downloadable set's file name, models that cannot load here, expected errors without tracebacks."""
import json
from pathlib import Path

import pytest
import torch
from app_helpers import TINY, free_port

from dferclip.errors import DataError
from dferclip.labelled import read_labels_csv
from dferclip.workbench import (
    EmbeddedSet,
    Workbench,
    numeric_labels_allowed,
    starting_set,
)


@pytest.fixture(scope="module")
def model():
    from dferclip import load_model

    return load_model(TINY)


def embedded(model, labels_csv: Path, classes) -> EmbeddedSet:
    """An evaluation set read from ``labels_csv`` (by the real reader); each clip embedded as its class's text."""
    clips = read_labels_csv(labels_csv, classes)
    with torch.no_grad():
        learned, zero = model.encode_classes(), model.zero_shot_classes()
    index = [c.label for c in clips]
    return EmbeddedSet([c.path for c in clips], torch.tensor(index), learned[index], zero[index],
                       label_names=[c.label_name for c in clips])


def write_labels(tmp_path, rows) -> Path:
    for name, _ in rows:
        (tmp_path / name).write_bytes(b"x")
    path = tmp_path / "labels.csv"
    path.write_text("path,label\n" + "".join(f"{n},{lab}\n" for n, lab in rows))
    return path


def test_labels_follow_class_names_across_a_class_set_change(model, tmp_path):
    dfew = starting_set("DFEW")
    labels = write_labels(tmp_path, [("a.mp4", "happiness"), ("b.mp4", "sadness"), ("c.mp4", "neutral"),
                                     ("d.mp4", "2")])  # "2" indexes DFEW: neutral
    ev = embedded(model, labels, dfew.classes)
    assert ev.label_names == ["happiness", "sadness", "neutral", "neutral"]
    wb = Workbench(model)
    wb.set_evaluation_embeddings(ev)
    assert wb.evaluate()["n"] == 4 and wb.evaluate()["unmatched"] == {}

    wb.start_from(starting_set("custom", ["happiness", "sadness", "bored"]))
    out = wb.evaluate()
    assert out["unmatched"] == {"neutral": 2}  # reported, not counted as "bored" (index 2)
    assert out["n"] == 2
    for mode in out["modes"].values():
        confusion = mode["current"].confusion.tolist()
        assert sum(map(sum, confusion)) == 2 and sum(confusion[2]) == 0  # nobody is labelled bored

    wb.start_from(starting_set("custom", ["bored", "calm"]))
    assert wb.evaluate()["n"] == 0 and wb.evaluate()["modes"] == {}  # no metrics on labels that do not match


def test_number_labels_only_index_a_built_in_class_set(tmp_path):
    custom = starting_set("custom", ["happy", "sad", "bored"])
    labels = write_labels(tmp_path, [("a.mp4", "happy"), ("b.mp4", "1")])
    assert numeric_labels_allowed(starting_set("DFEW")) and not numeric_labels_allowed(custom)
    with pytest.raises(DataError, match="only indexes a built-in class set"):
        read_labels_csv(labels, custom.classes, numeric=numeric_labels_allowed(custom))
    assert [c.label_name for c in read_labels_csv(labels, ["happy", "sad"])] == ["happy", "sad"]


def test_the_downloadable_set_is_named_after_the_set(tmp_path):
    from dferclip.ui.workbench import set_file

    ds = starting_set("DFEW")
    path = Path(set_file(ds.to_dict()))
    assert path.name == f"{ds.name}-v{ds.version}.json"
    assert json.loads(path.read_text())["name"] == ds.name
    assert set_file(ds.to_dict()) == str(path)  # the same set: the same file, not a new one per change


def test_downloadable_set_files_are_bounded(monkeypatch, tmp_path):
    import tempfile

    from dferclip.ui import workbench as ui

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(ui, "MAX_SET_FILES", 3)
    ds = starting_set("DFEW")
    paths = [Path(ui.set_file(ds.with_descriptions([[f"text {i}"]] * 7).to_dict())) for i in range(5)]
    kept = sorted(d.name for d in (tmp_path / "dferclip-sets").iterdir())
    assert len(kept) == 3 and paths[-1].is_file() and not paths[0].exists()


def test_a_model_that_needs_a_download_is_marked_offline():
    from dferclip.runtime import ZERO_SHOT_SOURCE, ModelEntry, ModelRegistry

    registry = ModelRegistry([ModelEntry(TINY, "tiny", "explicit"), ModelEntry(ZERO_SHOT_SOURCE, "zs", "zero-shot")],
                             dev="cpu")
    labels = {key: label for label, key in registry.choices()}
    assert labels[TINY] == "tiny"
    assert "unavailable here" in labels[ZERO_SHOT_SOURCE]  # HF_HUB_OFFLINE=1 in the tests
    assert "Hugging Face Hub" in registry.unavailable(ZERO_SHOT_SOURCE)


def test_expected_errors_print_no_traceback(capfd):
    import gradio as gr
    from gradio_client import Client

    from dferclip.runtime import ModelEntry, ModelRegistry
    from dferclip.ui.context import AppContext, build_model_bar
    from dferclip.ui.descriptions_tab import build_workbench_tab

    ctx = AppContext(ModelRegistry([ModelEntry(TINY, "tiny", "explicit")], dev="cpu"))
    with gr.Blocks() as demo:
        build_model_bar(ctx)
        build_workbench_tab(ctx)
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        rows = {"headers": ["class", "description"], "data": [["no such class", "a face"]], "metadata": None}
        with pytest.raises(Exception, match="unknown class 'no such class'"):
            client.predict(TINY, rows, "mean-embedding", api_name="/rescore_descriptions")
    finally:
        demo.close()
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
