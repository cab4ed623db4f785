"""What the learned-behaviour tests share: the one training seed CI runs, and how a figure meets its bound.

Each proof_*.py module trains a small model and returns the figures its tests assert, with the bounds they
assert them against. benchmarks/bench_proofs.py runs the same functions at every seed under every CPU kernel
set and prints the worst figure of each and its margin over the bound (BENCHMARKS.md, "Learned-behaviour
proofs"); the bounds sit below those worst figures, so a test holds for the method, not for one machine.
"""
from __future__ import annotations

import operator

SEED = 0  # the seed CI trains at; the matrix covers seeds 0-4
OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def lookup(figures: dict, path: str) -> float:
    for part in path.split("/"):
        figures = figures[part]
    return float(figures)


def missed(bounds, figures: dict, prefix: str = "") -> list[str]:
    """The bounds (figure path, op, bound) that ``figures`` misses, as readable lines; only the paths that start
    with ``prefix``."""
    out = []
    for path, op, bound in bounds:
        if path.startswith(prefix):
            value = lookup(figures, path)
            if not OPS[op](value, bound):
                out.append(f"{path} = {value:.3f}, bound {op} {bound}")
    return out


def assert_bounds(bounds, figures: dict, prefix: str = "") -> None:
    problems = missed(bounds, figures, prefix)
    assert not problems, "; ".join(problems)
