"""The learned-behaviour proofs across training seeds and CPU kernel sets.

Every test that trains a model and then asserts what it learned takes its figures from a proof function in
tests/ (see PROOFS) and its bounds from that module's BOUNDS. This script runs each proof at every seed under
every kernel set torch can be made to use here (ATEN_CPU_CAPABILITY default / avx2 / avx512 where the CPU has
it, oneDNN on and off), one process each, prints each bounded figure at every cell, the worst, the bound and
the margin, and exits 1 if any cell misses a bound.

    python benchmarks/bench_proofs.py                       # every proof, seeds 0-4, every kernel set
    python benchmarks/bench_proofs.py --proofs explain --seeds 0 1 --jobs 2 --out results.json
    python benchmarks/bench_proofs.py --one explain --seed 3   # one cell, in this process (JSON on stdout)
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from proofs import lookup, missed  # noqa: E402  (tests/proofs.py: the bounds' arithmetic the tests use)

# proof name -> (module in tests/, its function of the seed returning figures, its bounds)
PROOFS = {
    "explain": ("proof_explain", "figures", "BOUNDS"),
    "train": ("proof_train", "figures", "BOUNDS"),
    "fineclipper-pn": ("proof_fineclipper", "pn_figures", "PN_BOUNDS"),
    "fineclipper-zero-shot": ("proof_fineclipper", "zero_shot_figures", "ZERO_SHOT_BOUNDS"),
    "fineclipper-train": ("proof_fineclipper", "trainer_figures", "TRAINER_BOUNDS"),
    "local-llm": ("proof_local_llm", "figures", "BOUNDS"),
}


def proof(name: str):
    """(figures function, asserted bounds, claims measured but not asserted) of a proof."""
    module, function, bounds = PROOFS[name]
    module = importlib.import_module(module)
    return getattr(module, function), getattr(module, bounds), getattr(module, bounds.replace("BOUNDS", "REPORTED"), [])


def kernel_sets() -> list[dict]:
    """(ATEN_CPU_CAPABILITY, oneDNN on) pairs this CPU can run: up to the kernel set torch picks here by itself."""
    import torch

    caps = ["default", "avx2"] + (["avx512"] if torch.backends.cpu.get_cpu_capability() == "AVX512" else [])
    return [{"capability": c, "onednn": o} for c in caps for o in (True, False)]


def run_one(name: str, seed: int, onednn: bool = True) -> dict:
    import torch

    torch.backends.mkldnn.enabled = onednn
    function, _, _ = proof(name)
    start = time.perf_counter()
    figs = function(seed)
    return {"proof": name, "seed": seed, "capability": torch.backends.cpu.get_cpu_capability(),
            "onednn": torch.backends.mkldnn.enabled, "seconds": round(time.perf_counter() - start, 1),
            "figures": figs}


def run_cell(name: str, seed: int, ks: dict) -> dict:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=ks["capability"], OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, __file__, "--one", name, "--seed", str(seed)] + ([] if ks["onednn"] else ["--no-onednn"])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        return {"proof": name, "seed": seed, **ks, "error": proc.stderr[-2000:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["capability"].lower() != ks["capability"].lower() and ks["capability"] != "default":
        out["error"] = f"asked for {ks['capability']}, torch ran {out['capability']}"
    return out


def _table(rows: list[dict], cells: list, claims, twin: bool = False) -> None:
    """One line a claim: its figure at every seed under every kernel set, the worst, and the margin over the bound;
    the runs whose figure meets it are counted. ``twin``: the claim must fail, so the worst is the nearest to it."""
    print("figure | bound | " + " | ".join(f"{c}{'' if o else ' -onednn'}" for c, o in cells) + " | worst | margin | held")
    print("|".join(["---"] * (len(cells) + 5)))
    for path, op, bound in claims:
        per_cell, worst_all, held, runs = [], None, 0, 0
        pick = min if op.startswith(">") != twin else max  # the worst of the seeds
        for c, o in cells:
            cell = [r["figures"] for r in rows if (r["capability"].lower(), r["onednn"]) == (c, o)]
            vals = [lookup(f, path) for f in cell]
            worst_all = pick(vals) if worst_all is None else pick(worst_all, pick(vals))
            per_cell.append(" ".join(f"{v:.2f}" for v in vals))
            held += sum(not missed([(path, op, bound)], f) for f in cell)
            runs += len(vals)
        margin = ((worst_all - bound) if op.startswith(">") else (bound - worst_all)) * (-1 if twin else 1)
        print(f"{path} | {op} {bound:g} | " + " | ".join(per_cell) + f" | {worst_all:.2f} | {margin:+.2f} | {held}/{runs}")


def report(results: list[dict]) -> int:
    """Print each proof's tables; 1 if a run failed or missed an asserted bound."""
    failed = 0
    for name in sorted({r["proof"] for r in results}):
        _, bounds, reported = proof(name)
        rows = [r for r in results if r["proof"] == name]
        print(f"\n## {name}  ({len(rows)} runs, {sum(r.get('seconds', 0) for r in rows) / 60:.0f} CPU-min)")
        for r in rows:
            if "error" in r:
                failed += 1
                print(f"ERROR seed {r['seed']} {r['capability']} onednn={r['onednn']}: {r['error'][-500:]}")
        rows = [r for r in rows if "error" not in r]
        cells = sorted({(r["capability"].lower(), r["onednn"]) for r in rows})
        print(f"seeds {sorted({r['seed'] for r in rows})}; each cell lists the seeds' figures in order\n")
        _table(rows, cells, bounds)
        if reported:
            print("\nmeasured, not asserted (docs/explain.md says why):\n")
            _table(rows, cells, reported)
        twins = [(path.replace("trained/", "shuffled/", 1), op, bound) for path, op, bound in bounds
                 if path.startswith("trained/")]
        if twins:  # the same bound on the same model with its weights shuffled: must fail in every run
            print("\nthe shuffled twin (every bound must fail in every run):\n")
            _table(rows, cells, twins, twin=True)
            for r in rows:
                passed = [p for p in twins if not missed([p], r["figures"])]
                if passed:
                    failed += 1
                    print(f"SHUFFLED PASSED seed {r['seed']} {r['capability']} onednn={r['onednn']}: {passed}")
        for r in rows:
            problems = missed(bounds, r["figures"])
            if problems:
                failed += 1
                print(f"MISSED seed {r['seed']} {r['capability']} onednn={r['onednn']}: {'; '.join(problems)}")
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", choices=sorted(PROOFS), help="run one cell in this process, print JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-onednn", action="store_true")
    p.add_argument("--proofs", nargs="+", choices=sorted(PROOFS), default=sorted(PROOFS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--capabilities", nargs="+", help="a subset of default avx2 avx512")
    p.add_argument("--onednn", choices=["on", "off", "both"], default="both")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes at once (each one thread)")
    p.add_argument("--out", type=Path, help="also write every run's figures here (JSON)")
    p.add_argument("--report", type=Path, help="only print the table of an earlier --out file")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.seed, not args.no_onednn)))
        return 0
    if args.report:
        return report(json.loads(args.report.read_text()))
    from dferclip.backends import cpu_name

    sets = [k for k in kernel_sets() if (not args.capabilities or k["capability"] in args.capabilities)
            and args.onednn in ("both", "on" if k["onednn"] else "off")]
    jobs = [(n, s, k) for n in args.proofs for k in sets for s in args.seeds]
    print(f"# {cpu_name()}: {len(jobs)} runs, {args.jobs} at a time", flush=True)
    results = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for r in pool.map(lambda j: run_cell(*j), jobs):
            results.append(r)
            print(f"  {r['proof']} seed {r['seed']} {r['capability']} onednn={r['onednn']}: "
                  f"{'ERROR' if 'error' in r else str(r['seconds']) + ' s'}", flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=1))
    return report(results)


if __name__ == "__main__":
    sys.exit(main())
