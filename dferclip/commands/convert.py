"""convert: an official DFER-CLIP checkpoint -> the project's format (safetensors + JSON, no pickle)."""
from __future__ import annotations

from ..weights.checkpoints import convert


def add_arguments(p):
    p.add_argument("official", help="official DFER-CLIP checkpoint (.pth)")
    p.add_argument("out_dir", help="folder to write model.safetensors and config.json into (new or empty)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing out_dir (as a whole: it never holds a half-written model)")


def run(args) -> int:
    out = convert(args.official, args.out_dir, overwrite=args.force)
    print(f"wrote {out}")
    return 0
