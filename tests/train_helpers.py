"""Shared by the training tests: a run of ``python -m dferclip train`` under torchrun."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def torchrun_train(cfg, folder: Path, processes: int = 2, timeout: int = 300) -> None:
    """Train ``cfg`` (a TrainConfig) with ``processes`` CPU processes under torchrun, from ``folder``."""
    cfg_file = folder / "torchrun.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
         "-m", "dferclip", "train", "--config", str(cfg_file)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]


# A training run under torchrun that the test can look into: every rank writes the trainable parameters it ends
# training with to <dump>/params-rank<r>.pt (before _finish tests the selected model); argv: config file, dump
# folder, "resume" or "-", and "per-rank" to give each rank its own output folder <output>/rank<r> (no shared
# file system: rank 0's best/ is not where the other ranks look)
DRIVER = """
import dataclasses, json, os, sys
from pathlib import Path
import torch
import dferclip.training.train as T

cfg_file, dump, resume, layout = sys.argv[1:5]
rank = int(os.environ["RANK"])
cfg = T.TrainConfig.from_dict(json.loads(Path(cfg_file).read_text()))
if layout == "per-rank":
    cfg = dataclasses.replace(cfg, output=str(Path(cfg.output) / f"rank{rank}"))
finish = T._finish

def dumping_finish(cfg, model, *args, **kwargs):
    params = {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}
    torch.save(params, Path(dump) / f"params-rank{rank}.pt")
    return finish(cfg, model, *args, **kwargs)

T._finish = dumping_finish
T.train(cfg, resume=cfg.output if resume == "resume" else None)
"""


def torchrun_driver(cfg, folder: Path, *, resume: bool = False, per_rank: bool = False, processes: int = 2,
                    timeout: int = 300) -> list[dict]:
    """Run :data:`DRIVER` with ``cfg`` under torchrun from ``folder``; returns each rank's trained parameters."""
    cfg_file = folder / "driver.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    script = folder / "driver.py"
    script.write_text(DRIVER)
    dump = folder / "params"
    dump.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), DFERCLIP_DEVICE="cpu")
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
         str(script), str(cfg_file), str(dump), "resume" if resume else "-", "per-rank" if per_rank else "shared"],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # e.g. a rank waiting forever in a collective: end the ranks too
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        raise AssertionError(f"torchrun ran past {timeout} s: {err[-3000:]}") from None
    assert proc.returncode == 0, err[-3000:]
    import torch

    return [torch.load(dump / f"params-rank{r}.pt", weights_only=True) for r in range(processes)]
