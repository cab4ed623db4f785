"""Helpers shared by the benchmark scripts: machine description, timing, output."""
from __future__ import annotations

import os
import statistics
import time


def machine() -> str:
    import torch

    from dferclip.backends import cpu_name

    cpu = cpu_name()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def timeit(fn, repeat: int = 5, warmup: int = 1, sync=None) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": repeat}


def write_json(path: str | None, data: dict) -> None:
    if path:
        from dferclip.files import write_json as write_atomically

        write_atomically(path, data)
