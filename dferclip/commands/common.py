"""Argument helpers shared by several commands."""
from __future__ import annotations

from ..errors import DataError


def add_path_map_argument(p) -> None:
    p.add_argument("--path-map", action="append", default=[], metavar="OLD=NEW",
                   help="rewrite frame-folder prefixes of the lists, e.g. /data/EECS-IoannisLab/datasets=/srv/data")


def add_annotation_list_arguments(p) -> None:
    """Where the clips of an official-format annotation list are: label base, root folder, prefix rewrites."""
    p.add_argument("--label-base", type=int, default=0, help="first label in the list (official lists: 0)")
    p.add_argument("--data-root", help="resolve relative frame folders against this folder")
    add_path_map_argument(p)


def parse_path_map(items) -> dict:
    """``["OLD=NEW", ...]`` -> ``{"OLD": "NEW", ...}``."""
    out = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep:
            raise DataError(f"--path-map {item!r}: expected OLD=NEW")
        out[old] = new
    return out
