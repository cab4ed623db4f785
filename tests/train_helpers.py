"""Shared by the training tests: a run of ``python -m dferclip train`` under torchrun."""
import json
import os
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
