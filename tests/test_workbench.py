"""The workbench engine: editing, deltas vs previous/baseline, evaluation sets, saving, generation, CLI."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from workbench_helpers import FakeOpenAI, completion

import dferclip
from dferclip.cli import main as cli_main
from dferclip.errors import DataError, DescriptionError, LLMConfigError
from dferclip.metrics import compute_metrics
from dferclip.scoring import Scorer
from dferclip.text.descriptions import DescriptionSet, load_description_set
from dferclip.text.llm import LLMSettings
from dferclip.labelled import read_labels_csv
from dferclip.workbench import (
    EmbeddedSet,
    Workbench,
    descriptions_to_rows,
    rows_to_descriptions,
    starting_set,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return dferclip.load_model("random:dferclip-tiny")


@pytest.fixture(scope="module")
def videos():
    torch.manual_seed(2)
    return torch.rand(4, 1, 16, 3, 64, 64)


def test_rows_round_trip_and_errors():
    ds = starting_set("MAFW")
    assert ds.num_classes == 11 and ds.class_set == "MAFW"
    rows = descriptions_to_rows(ds)
    rows.insert(1, ["happiness", "a broad grin"])
    back = rows_to_descriptions(rows, ds)
    assert back.descriptions[0] == [ds.descriptions[0][0], "a broad grin"] and back.classes == ds.classes
    with pytest.raises(DescriptionError, match="unknown class"):
        rows_to_descriptions(rows + [["joy", "x"]], ds)
    with pytest.raises(DescriptionError, match="no description"):
        rows_to_descriptions([r for r in rows if r[0] != "fear"], ds)
    custom = starting_set("custom", ["calm", " excited ", ""])
    assert custom.classes == ["calm", "excited"]
    with pytest.raises(DescriptionError):
        starting_set("custom", [])


def test_deltas_against_previous_and_baseline(model, videos):
    wb = Workbench(model)
    names = [wb.add_clip(v) for v in videos[:2]]
    first = wb.score_clips()
    clip = first["clips"][names[0]]
    assert set(clip) == {"zero-shot", "learned"}
    assert clip["learned"]["delta_previous"] == pytest.approx([0.0] * 7, abs=1e-4)

    rows = descriptions_to_rows(wb.current)
    rows[3][1] = "deeply furrowed brows and a clenched jaw."
    wb.edit_rows(rows)
    rows[0][1] = "a broad grin with visible teeth."
    wb.edit_rows(rows)
    assert wb.previous.descriptions[3] == ["deeply furrowed brows and a clenched jaw."]
    assert wb.previous.descriptions[0] == wb.baseline.descriptions[0]
    out = wb.score_clips()["clips"][names[1]]

    scorer = Scorer(model)
    v = torch.nn.functional.normalize(model.encode_video(videos[1]).detach(), dim=-1)
    for which, ds in (("delta_previous", wb.previous), ("delta_baseline", wb.baseline)):
        expected = (scorer.score(v, wb.current).probs - scorer.score(v, ds).probs)[0] * 100
        assert out["learned"][which] == pytest.approx(expected.tolist(), abs=1e-3)
    with torch.no_grad():
        model_probs = model.score(model.encode_video(videos[1]), model.encode_classes(wb.current)).softmax(-1)[0]
    assert out["learned"]["probs"] == pytest.approx((model_probs * 100).tolist(), abs=1e-3)
    descs = out["learned"]["descriptors"]
    assert len(descs) == 7 and descs[0]["description"] == "a broad grin with visible teeth."
    logits = out["learned"]["logits"]
    assert sum(d["contribution"] for d in descs if d["class"] == "anger") == pytest.approx(logits[3], abs=1e-3)

    wb.edit(wb.current)  # no change: previous stays
    assert wb.previous.descriptions[3] == ["deeply furrowed brows and a clenched jaw."]


def test_custom_classes_score_zero_shot_only(model, videos):
    wb = Workbench(model, starting_set("custom", ["calm", "excited", "tired"]))
    name = wb.add_clip(videos[0])
    out = wb.score_clips()["clips"][name]
    assert set(out) == {"zero-shot"} and len(out["zero-shot"]["probs"]) == 3
    assert sum(out["zero-shot"]["probs"]) == pytest.approx(100.0)


def test_evaluation_metrics_hand_computed(model):
    """Clip embeddings set to class embeddings give known predictions, hence known UAR/WAR."""
    wb = Workbench(model)
    with torch.no_grad():
        learned = model.encode_classes()
        zero = model.zero_shot_classes()
    labels = [0, 0, 0, 1, 1, 2, 3, 3]
    predicted = [0, 0, 1, 1, 2, 2, 3, 0]
    wb.set_evaluation_embeddings(EmbeddedSet([f"c{i}" for i in range(8)], torch.tensor(labels),
                                             learned[predicted], zero[predicted]))
    ev = wb.evaluate()
    for mode in ("learned", "zero-shot"):
        cur = ev["modes"][mode]["current"]
        assert cur.uar == pytest.approx((200 / 3 + 50 + 100 + 50) / 4)
        assert cur.war == pytest.approx(62.5)
        assert cur.recall[0] == pytest.approx(200 / 3) and cur.confusion[3, 0] == 1
        assert ev["modes"][mode]["delta_baseline"]["uar"] == 0.0

    # an edit that moves class 2's embedding away: the deltas are current minus baseline, class by class
    descs = [list(d) for d in wb.current.descriptions]
    descs[2] = ["completely different words about a chin."]
    wb.edit(wb.current.with_descriptions(descs))
    ev = wb.evaluate()["modes"]["learned"]
    with torch.no_grad():
        preds = model.score(learned[predicted], model.encode_classes(wb.current)).argmax(-1).tolist()
    expected = compute_metrics(labels, preds, 7)
    assert ev["current"].uar == pytest.approx(expected.uar)
    assert ev["delta_previous"]["uar"] == pytest.approx(expected.uar - ev["previous"].uar)
    assert ev["delta_baseline"]["recall"][2] == pytest.approx(expected.recall[2] - 100.0)
    assert ev["delta_baseline"]["recall"][5] is None  # absent class


def write_tensor_clips(folder, videos):
    paths = []
    for i, v in enumerate(videos):
        p = folder / f"clip{i}.safetensors"
        save_file({"video": v.contiguous()}, str(p))
        paths.append(p)
    return paths


def test_evaluation_set_from_csv_cached_on_disk(model, videos, tmp_path):
    """Clips stored as tensors (ingestion is injected): embeddings computed once, then read from disk."""
    data = tmp_path / "clips"
    data.mkdir()
    write_tensor_clips(data, videos)
    (data / "bad.safetensors").write_bytes(b"not a tensor file")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\nclip0.safetensors,happiness\nclip1.safetensors,3\n"
                        "clip2.safetensors,Fear\nclip3.safetensors,sadness\nmissing.safetensors,fear\n"
                        "bad.safetensors,fear\n")
    clips = read_labels_csv(csv_path, model.class_names, data)
    assert [c.label for c in clips] == [0, 3, 6, 1, 6]
    loads = []

    def ingest_fn(path):
        loads.append(path)
        try:
            return load_file(path)["video"]
        except Exception as e:
            raise DataError(f"unreadable clip {path}: {e}") from None

    steps = []
    cache = tmp_path / "cache"
    wb = Workbench(model)
    ev_set = wb.set_evaluation(clips, cache_dir=cache, ingest_fn=ingest_fn, ingest_settings={"t": 1},
                               progress=lambda i, n, p: steps.append(i))
    assert len(ev_set) == 4 and len(ev_set.failed) == 1 and "bad.safetensors" in ev_set.failed[0][0]
    assert steps == [0, 1, 2, 3, 4, 5] and len(loads) == 5
    ev = wb.evaluate()
    with torch.no_grad():
        preds = model(videos.flatten(0, 1)).argmax(-1).tolist()
    assert ev["modes"]["learned"]["current"].war == pytest.approx(compute_metrics([0, 3, 6, 1], preds, 7).war)

    loads.clear()
    wb2 = Workbench(model)
    wb2.set_evaluation(clips, cache_dir=cache, ingest_fn=ingest_fn, ingest_settings={"t": 1})
    assert loads == [str(data / "bad.safetensors")]  # only the unreadable clip is tried again
    assert torch.equal(wb2.evaluation.learned, ev_set.learned)
    wb2.set_evaluation(clips, cache_dir=cache, ingest_fn=ingest_fn, ingest_settings={"t": 2})
    assert len(loads) == 1 + 5  # other ingestion settings: other cache entries

    with pytest.raises(DataError, match="neither a class"):
        csv_path.write_text("clip0.safetensors,joy\n")
        read_labels_csv(csv_path, model.class_names, data)


def test_evaluation_set_from_hf_dataset(model, videos, tmp_path):
    datasets = pytest.importorskip("datasets")
    from dferclip.labelled import read_hf_dataset

    paths = write_tensor_clips(tmp_path, videos[:2])
    features = datasets.Features({"path": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=model.class_names)})
    d = datasets.Dataset.from_dict({"path": [str(p) for p in paths] + [str(paths[0])], "label": [4, 2, -1]},
                                   features=features)
    d.save_to_disk(str(tmp_path / "hf"))
    clips = read_hf_dataset(tmp_path / "hf", model.class_names)
    # the row without a label (-1) is skipped, never filed under the last class
    assert [(c.path, c.label) for c in clips] == [(str(paths[0]), 4), (str(paths[1]), 2)]
    with pytest.raises(DataError):
        read_hf_dataset(tmp_path / "nothing", model.class_names)


def test_save_validated_versioned_and_becomes_baseline(model, tmp_path):
    wb = Workbench(model)
    descs = [list(d) for d in wb.current.descriptions]
    descs[0].append("crow's feet at the eyes")
    wb.edit(wb.current.with_descriptions(descs))
    for bad in ("../evil", "a/b", ".hidden", ""):
        with pytest.raises(DescriptionError, match="invalid"):
            wb.save(bad, tmp_path)
    p = wb.save("my-set", tmp_path, edited_by="test")
    again = wb.save("my-set", tmp_path)
    assert p == again == tmp_path / "my-set.json"
    saved = load_description_set("my-set", tmp_path)
    assert saved.version == 2 and saved.descriptions[0][-1] == "crow's feet at the eyes"
    assert saved.provenance["edited_by"] == "test" and saved.provenance["derived_from"].startswith("dferclip-official")
    assert wb.baseline.name == "my-set" and sorted(tmp_path.iterdir()) == [tmp_path / ".history", p]  # no temp files
    kept = load_description_set(tmp_path / ".history" / "my-set.v1.json")  # the first save is kept, not destroyed
    assert kept.version == 1 and kept.descriptions == saved.descriptions
    for shipped in ("class_sets", "dferclip-official-dfew"):
        with pytest.raises(DescriptionError, match="shipped"):
            wb.save(shipped, tmp_path)


def test_flags(model):
    wb = Workbench(model)
    descs = [list(d) for d in wb.current.descriptions]
    descs[1] = ["a sad face", "tears " * 80]
    flags = wb.flags(wb.current.with_descriptions(descs))
    assert {(f["class"], f["kind"]) for f in flags} == {("sadness", "leak"), ("sadness", "too-long")}


def test_generate_merges_into_current(model):
    server = FakeOpenAI()
    server.respond = lambda body: (200, completion('{"descriptions": ["narrowed eyes", "a happy smirk"]}'), 0)
    try:
        wb = Workbench(model)
        before = wb.current
        gen = wb.generate("cupl", only=["anger"], replace=False,
                          settings=LLMSettings(model="m", base_url=server.url, api_key="k", max_retries=0))
    finally:
        server.close()
    assert wb.previous is before
    assert wb.current.descriptions[3] == before.descriptions[3] + ["narrowed eyes", "a happy smirk"]
    assert wb.current.descriptions[0] == before.descriptions[0]
    assert [f.kind for f in gen.flags[0][1]] == ["other-emotion"]
    assert wb.current.provenance["generated_by"]["prompt_style"] == "cupl"
    with pytest.raises(LLMConfigError):
        wb.generate(settings=LLMSettings(api_key=None))
    assert wb.score_clips() is not None  # the rest keeps working


def test_cli(tmp_path, capsys, monkeypatch):
    assert cli_main(["describe", "check"]) == 0
    bad = DescriptionSet(["happiness", "sadness"], [["a happy face"], ["drooping eyelids"]], name="leaky")
    path = tmp_path / "leaky.json"
    path.write_text(json.dumps(bad.to_dict()))
    capsys.readouterr()
    assert cli_main(["describe", "check", "--set", str(path)]) == 1
    assert "leak" in capsys.readouterr().out
    assert cli_main(["describe", "diff", "dferclip-official-dfew", str(path)]) == 0
    assert "- a smiling mouth" in capsys.readouterr().out
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert cli_main(["describe", "generate", "--name", "x"]) == 2  # no server: the local model, not cached
    assert "local Hugging Face cache" in capsys.readouterr().err
    assert cli_main(["describe", "generate", "--name", "x", "--backend", "openai"]) == 2
    assert "no API key" in capsys.readouterr().err


def test_evaluation_set_of_real_videos_through_ingestion(model, tmp_path, monkeypatch):
    """Real encoded clips (faces moving over a background) through dferclip.ingest; a second workbench on the
    same cache folder ingests nothing; a CLI run prints UAR/WAR."""
    from media import face_clip

    import dferclip.video.ingest

    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(3):
        face_clip(folder / f"clip{i}.mp4", num_frames=20 + 3 * i, width=320, height=240, face_scale=0.8)
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    csv_path = folder / "labels.csv"
    csv_path.write_text("path,label\nclip0.mp4,anger\nclip1.mp4,fear\nclip2.mp4,anger\nbroken.mp4,fear\n")
    real_ingest, calls = dferclip.video.ingest.ingest, []

    def counting_ingest(path, *args, **kw):
        calls.append(path)
        return real_ingest(path, *args, **kw)

    monkeypatch.setattr(dferclip.video.ingest, "ingest", counting_ingest)
    clips = read_labels_csv(csv_path, model.class_names)
    wb = Workbench(model)
    embedded = wb.set_evaluation(clips, cache_dir=tmp_path / "cache")
    assert len(embedded) == 3 and len(embedded.failed) == 1 and len(calls) == 4
    with torch.no_grad():
        videos = torch.cat([real_ingest(folder / f"clip{i}.mp4", model.input_config).video for i in range(3)])
        expected = compute_metrics([3, 6, 3], model(videos).argmax(-1).tolist(), 7)
    ev = wb.evaluate()["modes"]["learned"]["current"]
    assert (ev.uar, ev.war) == pytest.approx((expected.uar, expected.war))
    calls.clear()
    Workbench(model).set_evaluation(clips, cache_dir=tmp_path / "cache")
    assert calls == [str(folder / "broken.mp4")]


def test_clip_files_are_bounded_like_clip_tensors(model, tmp_path, monkeypatch):
    from media import face_clip

    import dferclip.workbench as workbench

    monkeypatch.setattr(workbench, "MAX_CLIPS", 2)
    wb = Workbench(model)
    names = [wb.add_clip_file(face_clip(tmp_path / f"clip{i}.mp4", num_frames=8)[0])
             for i in range(3)]
    assert list(wb.clips) == names[1:]  # the oldest dropped, as add_clip does
