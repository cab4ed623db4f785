"""Run every benchmark and write BENCHMARKS.md (each script prints its own markdown table).

Usage: python benchmarks/run_all.py [--only model,ingest,...] [--out BENCHMARKS.md]
Run it on an otherwise idle machine: the figures are wall-clock times.
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine  # noqa: E402

BENCHES = {  # name: (title, script, extra arguments; {json} is replaced by a results path)
    "model": ("Model forward (issue 2)", "bench_model.py", ["--json", "{json}"]),
    "ingest": ("Video ingestion (issue 3)", "bench_ingest.py", ["--out", "{json}"]),
    "app": ("App predict endpoint through gradio_client (issue 4)", "bench_app.py", ["--json", "{json}"]),
    "workbench": ("Description workbench re-scoring (issue 5)", "bench_workbench.py", ["--out", "{json}"]),
    "train": ("Training and data loading (issue 6)", "bench_train.py", ["--json", "{json}"]),
    "fineclipper": ("FineCLIPER vs DFER-CLIP (issue 7)", "bench_fineclipper.py", ["--json", "{json}"]),
    "backends": ("Image tower backends on CPU (issue 13)", "bench_backends.py", ["--json", "{json}"]),
    "corpus": ("Corpus predict against a loop of single-clip predicts (issue 13)", "bench_corpus.py",
               ["--json", "{json}"]),
    "app-fineclipper": ("App predict endpoint with FineCLIPER ViT-B/16, all streams (issue 7)", "bench_app.py",
                        ["--model", "random:fineclipper-vit-b-16", "--repeats", "2", "--no-precision",
                         "--json", "{json}"]),
    "load": ("Public app under load: 16 concurrent visitors (issue 11)", "bench_load.py", ["--json", "{json}"]),
    "local-llm": ("Local description model, Qwen2.5-0.5B-Instruct shape (issue 12)", "bench_local_llm.py",
                  ["--load", "--json", "{json}"]),
    "live": ("Live tab: one webcam frame with ViT-B/32 (issue 13)", "bench_live.py", ["--json", "{json}"]),
    "explain": ("Explanations: relevancy maps + frame importance vs a forward pass (issue 14)", "bench_explain.py",
                ["--json", "{json}"]),
    "batching": ("Frames per image-tower call on CPU (issue 23)", "bench_batching.py", ["--malloc-keep", "--json", "{json}"]),
    "resume": ("A resumed corpus run with nothing left to do (issue 23)", "bench_resume.py", ["--json", "{json}"]),
    "faces": ("Every face of a clip against one run per face (issue 22)", "bench_faces.py", ["--out", "{json}"]),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(BENCHES))
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    parts = [f"# Benchmarks\n\nMachine: {machine()}. Run {datetime.date.today()} with "
             "`python benchmarks/run_all.py`; random weights throughout (no CLIP weights can be had offline; "
             "latency does not depend on the values).\n"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            title, script, extra = BENCHES[name]
            cmd = [sys.executable, str(ROOT / "benchmarks" / script)]
            cmd += [a.replace("{json}", str(Path(tmp) / f"{name}.json")) for a in extra]
            print("running", " ".join(cmd), flush=True)
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            body = proc.stdout.strip() if proc.returncode == 0 else f"FAILED (exit {proc.returncode}):\n```\n{proc.stderr[-2000:]}\n```"
            parts.append(f"## {title}\n\n{body}\n")
    Path(args.out).write_text("\n".join(parts))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
