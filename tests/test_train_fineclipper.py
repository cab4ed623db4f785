"""FineCLIPER through the project's trainer and evaluator: dict batches with every stream (face-analysis renders,
caption tokens, clips with and without a caption), the face-analysis cache, the missing-caption report, the
evaluate command with --captions, two torchrun processes matching one, and training/configs/fineclipper.json."""
import json
import logging
import pickle
from pathlib import Path

import pytest
import torch
from train_helpers import torchrun_driver, torchrun_train

import dferclip
from dferclip.models.fineclipper import FineCLIPER, fineclipper_config
from dferclip.training.captions import (
    CaptionError,
    CaptionRecord,
    CaptionStore,
    clip_key,
)
from dferclip.training.data import read_annotation
from dferclip.training.synthetic import CLASS_NAMES, write_frame_dataset
from dferclip.training.train import (
    _datasets,
    load_train_config,
    load_train_state,
    train,
)

REPO = Path(__file__).resolve().parent.parent
STREAM_KEYS = {"video", "landmarks", "parsing", "caption_tokens", "caption_present"}
CAPTION = "The mouth corners move and the eyebrows shift over the frames."
# SGD, as in tests/test_train.py: Adam would blow float noise in near-zero gradients up to full steps, so
# runs that differ only in summation order (one process or two) would drift apart
SMALL = dict(init="random", num_frames=4, epochs=2, batch_size=6, val_fraction=0.2, milestones=[1], log_every=0,
             optimizer="sgd", workers=0, augment={"crop_area": [0.8, 1.0], "flip": True},
             lr={"visual_adapters": 0.05, "text_adapters": 0.05, "temporal": 0.05, "fusion": 0.05})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """18 training clips (3 per class) and 6 test clips; a caption for every third clip of each list."""
    root = tmp_path_factory.mktemp("fine-data")
    train_list = write_frame_dataset(root / "train", 3, seed=1, size=48, frames=(5, 8))
    test_list = write_frame_dataset(root / "test", 1, seed=2, size=48, frames=(5, 8))
    store = CaptionStore(root / "captions.json")
    captioned = {}
    for name, lst in (("train", train_list), ("test", test_list)):
        records, _ = read_annotation(lst, num_classes=len(CLASS_NAMES))
        captioned[name] = [r.path for i, r in enumerate(records) if i % 3 == 0]
        for path in captioned[name]:
            store.put(clip_key(path), CaptionRecord(CAPTION, CAPTION, [], "test", "none", 8, source=path))
    store.flush()
    model_json = root / "fineclipper-full-tiny.json"
    model_json.write_text(json.dumps(fineclipper_config("full", base="fineclipper-tiny").to_dict()))
    return {"train": train_list, "test": test_list, "captions": store.path, "model": model_json,
            "captioned": captioned}


def _config(data, out, **kw):
    values = dict(SMALL, model=str(data["model"]), train=str(data["train"]), test=str(data["test"]),
                  captions=str(data["captions"]), output=str(out)) | kw
    return load_train_config("synthetic-tiny").with_overrides([f"{k}={json.dumps(v)}" for k, v in values.items()])


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    """One training run of the full tiny model; records what reached FineCLIPER.forward in training mode."""
    out = tmp_path_factory.mktemp("fine-runs") / "full"
    seen = []
    forward = FineCLIPER.forward

    def recording_forward(self, inputs):
        if self.training:
            seen.append({k: v.detach().clone() for k, v in inputs.items()} if isinstance(inputs, dict) else inputs)
        return forward(self, inputs)

    logs = _Records()
    logger = logging.getLogger("dferclip.training.train")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(logs)
    FineCLIPER.forward = recording_forward
    try:
        cfg = _config(data, out)
        summary = train(cfg)
    finally:
        FineCLIPER.forward = forward
        logger.removeHandler(logs)
        logger.setLevel(level)
    return cfg, summary, seen, logs.messages


def test_full_model_trains_on_dict_batches_with_every_stream(full_run, data):
    cfg, summary, seen, _ = full_run
    assert len(seen) == 2 * 2  # 12 training clips after the validation split, batches of 6, 2 epochs
    for batch in seen:
        assert isinstance(batch, dict) and set(batch) == STREAM_KEYS
        assert batch["video"].shape == batch["landmarks"].shape == batch["parsing"].shape == (6, 4, 3, 64, 64)
        assert batch["caption_tokens"].shape == (6, 77) and batch["caption_present"].dtype == torch.bool
        # the renders are not the video itself (the parsing image is a class map in palette colours)
        assert not torch.equal(batch["parsing"], batch["video"])
    present = torch.cat([b["caption_present"] for b in seen])
    assert present.any() and not present.all()
    captioned_tokens = torch.cat([b["caption_tokens"][b["caption_present"]] for b in seen])
    assert (captioned_tokens != 0).sum(dim=1).min() > 5
    history = load_train_state(cfg.output)["history"]
    assert [r["epoch"] for r in history] == [1, 2] and all("val/uar" in r for r in history)
    assert history[1]["lr/fusion"] == pytest.approx(0.1 * history[0]["lr/fusion"])


def test_run_writes_a_loadable_fineclipper_and_fills_the_face_cache(full_run):
    cfg, summary, _, _ = full_run
    out = Path(cfg.output)
    model = dferclip.load_model(out / "best")
    assert isinstance(model, FineCLIPER) and model.streams == ("video", "parsing", "landmarks", "caption")
    assert model.weights_info["trained"] is True and model.class_names == CLASS_NAMES
    state = load_train_state(out)["model"]
    saved = model.state_dict()
    changed = [k for k in saved if ".adapters." in k and not torch.equal(saved[k], torch.zeros_like(saved[k]))]
    assert changed, "the adapters' zero-initialised up-projections never moved"
    assert set(summary["test"]) >= {"uar", "war", "confusion"} and summary["test"]["n"] == 6
    cache = out.parent / "face-cache"  # the default: beside the run folder
    assert len(list(cache.rglob("*.npz"))) >= 6 + 6  # validation and test clips at least
    assert any(".adapters." in k for k in state)


def test_missing_captions_are_counted_logged_and_kept_in_results(full_run, data):
    cfg, summary, _, messages = full_run
    report = summary["captions"]
    assert set(report) == {"train", "val", "test"}
    assert report["train"]["clips"] + report["val"]["clips"] == 18 and report["test"]["clips"] == 6
    uncaptioned_train = 18 - len(data["captioned"]["train"])
    assert report["train"]["without_caption"] + report["val"]["without_caption"] == uncaptioned_train
    assert report["test"]["without_caption"] == 6 - len(data["captioned"]["test"])
    assert json.loads((Path(cfg.output) / "results.json").read_text())["captions"] == report
    line = next(m for m in messages if "without a caption" in m)
    assert f"test: {report['test']['without_caption']} of 6 clips" in line and str(data["captions"]) in line


def test_wrapped_datasets_reach_the_base_set_and_pickle_for_workers(data, tmp_path):
    from dferclip.training.train import build_for_training, resolve_descriptions

    cfg = _config(data, tmp_path / "run")
    model = build_for_training(cfg, resolve_descriptions(cfg))
    train_ds, val_ds, test_ds = _datasets(cfg, model, Path(cfg.output))
    assert len(train_ds) == 12 and len(val_ds) == 6 and len(test_ds) == 6
    assert train_ds.base.train and not val_ds.base.train  # subset() ran before wrapping
    assert train_ds.labels == train_ds.base.labels and train_ds.records is train_ds.base.records
    train_ds.set_epoch(3)
    assert train_ds.base.epoch == 3
    copy = pickle.loads(pickle.dumps(train_ds))
    a, b = copy[0][0], train_ds[0][0]
    assert set(a) == STREAM_KEYS and all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_command_with_captions_prints_uar_war_and_matches_the_run(full_run, data, tmp_path, capsys):
    from dferclip.cli import main

    cfg, summary, _, _ = full_run
    out = tmp_path / "eval.json"
    # one DataLoader worker: MediaPipe ran in this process (the training above), so a forked worker would
    # crash; the evaluator starts it with spawn
    rc = main(["evaluate", "--checkpoint", str(Path(cfg.output) / "best"), "--data", str(data["test"]),
               "--captions", str(data["captions"]), "--face-cache", str(tmp_path / "faces"), "--workers", "1",
               "--device", "cpu", "--output", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "UAR" in printed and "WAR" in printed
    assert f"captions: {6 - len(data['captioned']['test'])} of 6 clips have none" in printed
    res = json.loads(out.read_text())
    assert res["confusion"] == summary["test"]["confusion"] and res["uar"] == pytest.approx(summary["test"]["uar"])
    assert res["captions"] == summary["captions"]["test"]
    assert len(list((tmp_path / "faces").rglob("*.npz"))) == 6
    rc = main(["evaluate", "--checkpoint", str(Path(cfg.output) / "best"), "--data", str(data["test"]),
               "--captions", str(tmp_path / "none.json"), "--workers", "0"])
    assert rc == 2 and "no caption file" in capsys.readouterr().err


def test_without_a_caption_file_every_clip_is_reported_as_uncaptioned(full_run, data):
    from dferclip.training.evaluate import evaluate_sources

    cfg, _, _, _ = full_run
    res = evaluate_sources(str(Path(cfg.output) / "best"), str(data["test"]))
    assert res["captions"] == {"clips": 6, "without_caption": 6} and res["n"] == 6


@pytest.mark.slow
def test_two_torchrun_processes_match_one_with_dict_batches(full_run, data, tmp_path):
    cfg, ref_summary, _, _ = full_run
    out = tmp_path / "ddp"
    torchrun_train(_config(data, out), tmp_path)
    a, b = load_train_state(cfg.output)["model"], load_train_state(out)["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    summary = json.loads((out / "results.json").read_text())
    assert summary["selection"]["epoch"] == ref_summary["selection"]["epoch"]
    assert summary["test"]["confusion"] == ref_summary["test"]["confusion"]
    assert summary["captions"] == ref_summary["captions"]


def test_fineclipper_train_config_matches_the_models_parameter_groups(data, tmp_path):
    from dferclip.training.train import (
        build_for_training,
        make_optimizer,
        resolve_descriptions,
        trainable_groups,
    )

    cfg = load_train_config("fineclipper")
    assert cfg.model == "fineclipper-vit-b-16" and cfg.init == "pretrained:openai" and cfg.optimizer == "adamw"
    assert "_comment" in json.loads((REPO / "dferclip/training/configs/fineclipper.json").read_text())
    assert max(cfg.milestones) < cfg.epochs
    tiny = cfg.with_overrides([f"model={json.dumps(str(data['model']))}", "init=random", "num_frames=4"])
    model = build_for_training(tiny, resolve_descriptions(tiny))
    assert isinstance(model, FineCLIPER) and model.streams == ("video", "parsing", "landmarks", "caption")
    groups = trainable_groups(model)
    assert set(groups) == set(cfg.lr) == {"visual_adapters", "text_adapters", "temporal", "fusion"}
    optimizer = make_optimizer(tiny, groups)
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == cfg.lr
    assert type(optimizer) is torch.optim.AdamW


def test_train_command_passes_captions_and_face_cache(tmp_path, capsys):
    from dferclip.cli import main

    assert main(["train", "--config", "fineclipper", "--captions", "caps/fold{fold}.json", "--face-cache",
                 str(tmp_path / "faces"), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["captions"] == "caps/fold{fold}.json" and printed["face_cache"] == str(tmp_path / "faces")


def test_a_missing_caption_file_is_a_clear_error(data, tmp_path):
    with pytest.raises(CaptionError, match="no caption file"):
        train(_config(data, tmp_path / "run", captions=str(tmp_path / "missing.json")))


def test_caption_alignment_under_ddp_with_captionless_batches_on_a_rank(data, tmp_path):
    """align_weight > 0 with one captioned training clip: every step some rank's batch has no caption. Its
    loss must still reach the caption adapters (DDP without find_unused_parameters failed or hung at the
    next step), and both ranks end with the same weights."""
    root = tmp_path / "data"
    store = CaptionStore(root / "one-caption.json")
    records, _ = read_annotation(data["train"], num_classes=len(CLASS_NAMES))
    store.put(clip_key(records[0].path), CaptionRecord(CAPTION, CAPTION, [], "test", "none", 8,
                                                       source=records[0].path))
    store.flush()
    model_json = root / "fineclipper-base-align.json"
    model_json.write_text(json.dumps(fineclipper_config("base", base="fineclipper-tiny", align_weight=0.5).to_dict()))
    cfg = _config(data, tmp_path / "run", model=str(model_json), captions=str(store.path), test=None)
    ranks = torchrun_driver(cfg, tmp_path, timeout=240)
    caption_side = [k for k in ranks[0] if ".adapters.caption." in k]
    assert caption_side, sorted(ranks[0])  # the caption adapters are trained
    assert ranks[0].keys() == ranks[1].keys()
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
