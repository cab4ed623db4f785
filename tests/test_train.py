"""Training works offline: a tiny random model learns synthetic expressions (including the class that only
temporal order separates), resuming continues exactly, and two torchrun processes match one."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import torchrun_driver, torchrun_train

import proof_train
from proofs import SEED, assert_bounds

from dferclip.training.evaluate import evaluate_sources
from dferclip.training.synthetic import CLASS_NAMES, write_frame_dataset
from dferclip.training.train import load_train_config, load_train_state, train
from dferclip.weights.checkpoints import load_model

def _config(out, train_list, test_list, **kw):
    overrides = [f"train={json.dumps(str(train_list))}", f"test={json.dumps(str(test_list))}",
                 f"output={json.dumps(str(out))}"] + [f"{k}={json.dumps(v)}" for k, v in kw.items()]
    return load_train_config("synthetic-tiny").with_overrides(overrides)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn-small")
    return (write_frame_dataset(root / "train", 5, seed=1, size=48, frames=(6, 12)),
            write_frame_dataset(root / "test", 1, seed=2, size=48, frames=(6, 12)))


# SGD (the official optimiser): Adam would turn float noise in exactly-zero gradients (e.g. attention key
# biases) into full-size steps, so runs that differ only in summation order would drift apart
SMALL = dict(epochs=3, batch_size=12, num_frames=4, val_fraction=0.2, milestones=[2], log_every=0, optimizer="sgd",
             lr={"temporal": 0.01, "image_encoder": 0.01, "prompt_learner": 0.01})


@pytest.fixture(scope="module")
def reference_run(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ref"
    cfg = _config(out, *small_data, **SMALL)
    return cfg, train(cfg)


def _weights(run_dir):
    return load_train_state(run_dir)["model"]


def test_run_folder_is_complete_and_loadable(reference_run):
    cfg, summary = reference_run
    out = Path(cfg.output)
    state = torch.load(out / "train_state.pt", weights_only=True)  # plain tensors and types only
    assert state["epoch"] == 3 and len(state["history"]) == 3
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and all("val/uar" in r for r in lines)
    assert lines[2]["lr/temporal"] == pytest.approx(0.1 * lines[1]["lr/temporal"])  # milestone 2, gamma 0.1
    model = load_model(out / "best")
    assert model.class_names == CLASS_NAMES and model.weights_info["trained"] is True
    assert model.input_config.num_frames == 4 and model.input_config.mean is not None
    assert set(summary["test"]) >= {"uar", "war", "recall", "confusion"} and summary["test"]["n"] == 6
    again = evaluate_sources(str(out / "best"), str(cfg.test))
    assert again["uar"] == pytest.approx(summary["test"]["uar"])
    assert again["confusion"] == summary["test"]["confusion"]


def test_resume_gives_the_same_result(small_data, reference_run, tmp_path):
    cfg, _ = reference_run
    out = tmp_path / "resumed"
    train(_config(out, *small_data, **(SMALL | {"epochs": 2})))
    assert load_train_state(out)["epoch"] == 2
    train(_config(out, *small_data, **SMALL), resume=out)
    a, b = _weights(cfg.output), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = [{k: v for k, v in r.items() if k != "train/seconds"} for r in load_train_state(cfg.output)["history"]]
    hb = [{k: v for k, v in r.items() if k != "train/seconds"} for r in load_train_state(out)["history"]]
    assert ha == hb


def test_two_torchrun_processes_match_one(small_data, reference_run, tmp_path):
    cfg, ref_summary = reference_run
    out = tmp_path / "ddp"
    torchrun_train(_config(out, *small_data, **SMALL), tmp_path, timeout=240)
    a, b = _weights(cfg.output), _weights(out)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    summary = json.loads((out / "results.json").read_text())
    assert summary["selection"]["epoch"] == ref_summary["selection"]["epoch"]
    assert summary["test"]["confusion"] == ref_summary["test"]["confusion"]


def test_a_resume_after_the_last_improvement_tests_the_best_model_on_every_rank_without_a_shared_fs(
        small_data, reference_run, tmp_path):
    """Each rank has its own output folder (no shared file system: only rank 0's holds best/); resumed after
    the last improvement, with last weights unlike the best ones. Every rank must test the best model: the
    test metrics equal one process's evaluation of best/ (rank 1 tested its last weights before)."""
    cfg, _ = reference_run
    base = tmp_path / "run"
    rank0, rank1 = base / "rank0", base / "rank1"
    shutil.copytree(cfg.output, rank0)
    rank1.mkdir()
    state = load_train_state(rank0)
    g = torch.Generator().manual_seed(0)
    for k in ("prompt.ctx", *[k for k in state["model"] if k.startswith("temporal.")]):
        v = state["model"][k]
        if v.is_floating_point():  # the last weights: far from the selected ones
            state["model"][k] = v + torch.randn(v.shape, generator=g) * (3 * v.std() + 0.5)
    for folder in (rank0, rank1):
        torch.save(state, folder / "train_state.pt")
    best = evaluate_sources(str(rank0 / "best"), str(cfg.test))
    last_model = load_model(rank0 / "best")
    last_model.load_state_dict(state["model"])
    last_model.weights_info = dict(last_model.weights_info, epoch=-1)
    from dferclip.weights.checkpoints import save_model

    save_model(last_model, tmp_path / "last")
    last = evaluate_sources(str(tmp_path / "last"), str(cfg.test))
    assert last["confusion"] != best["confusion"]  # else this test could not tell the two apart

    torchrun_driver(_config(base, *small_data, **SMALL), tmp_path, resume=True, per_rank=True, timeout=240)
    summary = json.loads((rank0 / "results.json").read_text())
    assert summary["test"]["confusion"] == best["confusion"]
    assert summary["test"]["uar"] == pytest.approx(best["uar"])
    assert not (rank1 / "best").exists() and not (rank1 / "results.json").exists()


@pytest.mark.slow
def test_tiny_model_learns_synthetic_expressions_and_temporal_order(tmp_path):
    """UAR at least twice chance, and the pair that differs only in frame order told apart (which needs the
    temporal transformer): tests/proof_train.py, whose bounds hold at every seed and kernel set."""
    figures = proof_train.figures(SEED, folder=tmp_path)
    print(figures)
    assert_bounds(proof_train.BOUNDS, figures)


def test_evaluate_command_with_folds(reference_run, tmp_path, capsys):
    from dferclip.cli import main

    cfg, summary = reference_run
    for k in (1, 2):
        (tmp_path / f"model{k}").symlink_to(Path(cfg.output) / "best", target_is_directory=True)
        lines = Path(cfg.test).read_text().splitlines()
        (tmp_path / f"test{k}.txt").write_text("\n".join(lines[: 6 - k]) + "\n")  # folds of 5 and 4 clips
    out = tmp_path / "eval" / "results.json"
    rc = main(["evaluate", "--checkpoint", str(tmp_path / "model{fold}"), "--data", str(tmp_path / "test{fold}.txt"),
               "--folds", "1-2", "--output", str(out), "--workers", "0", "--device", "cpu"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [f["fold"] for f in res["folds"]] == [1, 2] and [f["n"] for f in res["folds"]] == [5, 4]
    assert res["mean"]["uar"] == pytest.approx(np.mean([f["uar"] for f in res["folds"]]))
    assert res["mean"]["war"] == pytest.approx(np.mean([f["war"] for f in res["folds"]]))
    for f in res["folds"]:
        cm = np.array(f["confusion"])
        assert cm.sum() == f["n"] and f["war"] == pytest.approx(100 * cm.trace() / cm.sum())
        if f["confusion_plot"]:
            assert Path(f["confusion_plot"]).stat().st_size > 1000
    assert "mean over 2 folds" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(tmp_path / "model1"), "--data", str(tmp_path / "nope.txt")]) == 2


def test_an_output_folder_holding_a_run_is_refused_and_replace_keeps_the_earlier_run(small_data, reference_run,
                                                                                   tmp_path, capsys):
    from dferclip.cli import main
    from dferclip.errors import TrainingError

    cfg, _ = reference_run
    out = Path(cfg.output)
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    with pytest.raises(TrainingError, match="already holds a run.*--resume.*--replace"):
        train(cfg)
    assert main(["train", "--config", "synthetic-tiny", "--train", str(small_data[0]), "--output", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # metrics.jsonl not appended to, best/ not overwritten

    run = tmp_path / "run"
    train(_config(run, *small_data, **(SMALL | {"epochs": 1})))
    first = (run / "metrics.jsonl").read_text()
    train(_config(run, *small_data, **(SMALL | {"epochs": 1, "seed": 2})), replace=True)
    (aside,) = tmp_path.glob("run.replaced-*")
    assert (aside / "metrics.jsonl").read_text() == first and load_model(aside / "best").weights_info["epoch"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert [json.loads((d / "config.json").read_text())["seed"] for d in (aside, run)] == [1, 2]


def test_a_run_resumed_into_a_new_folder_logs_its_whole_history(small_data, tmp_path):
    first = tmp_path / "first"
    train(_config(first, *small_data, **(SMALL | {"epochs": 1})))
    second = tmp_path / "second"
    train(_config(second, *small_data, **(SMALL | {"epochs": 2})), resume=first)
    logged = [json.loads(x) for x in (second / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 2]
    assert logged == load_train_state(second)["history"]


def test_resume_restores_the_random_streams_it_saved(tmp_path, caplog):
    from dferclip.training.train import _atomic_save, restore_rng_state, rng_state

    torch.manual_seed(5)
    state = {"format": "dferclip.train_state/1", **rng_state()}
    expected = torch.rand(3)
    _atomic_save(state, tmp_path / "train_state.pt")
    torch.rand(10)  # the stream moves on
    loaded = load_train_state(tmp_path)
    assert isinstance(loaded["rng_cuda"], list)
    restore_rng_state(loaded)
    assert torch.equal(torch.rand(3), expected)
    if torch.cuda.is_available():
        assert len(loaded["rng_cuda"]) == torch.cuda.device_count()
    else:  # a state saved on a GPU machine resumes here, saying that the continuation is not exact
        with caplog.at_level("WARNING"):
            assert restore_rng_state(loaded | {"rng_cuda": [torch.get_rng_state()]}) == 0
        assert "not an exact continuation" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_restores_the_cuda_random_streams(tmp_path):
    from dferclip.training.train import _atomic_save, restore_rng_state, rng_state

    torch.cuda.manual_seed_all(7)
    _atomic_save({"format": "dferclip.train_state/1", **rng_state()}, tmp_path / "train_state.pt")
    expected = torch.rand(3, device="cuda")
    torch.rand(10, device="cuda")
    assert restore_rng_state(load_train_state(tmp_path)) == torch.cuda.device_count()
    assert torch.equal(torch.rand(3, device="cuda"), expected)
