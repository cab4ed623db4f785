"""``python -m dferclip <command> ...``: each command lives in ``dferclip/commands/<name>.py`` and
provides ``add_arguments(parser)`` and ``run(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import logs
from .errors import DferclipError

COMMANDS = {
    "predict": "classify a video clip",
    "evaluate": "UAR/WAR/confusion of a model on a labelled set",
    "train": "train a model (official DFER-CLIP recipe by default)",
    "convert": "official DFER-CLIP .pth -> the project's safetensors format",
    "describe": "generate, check, diff and score class descriptions",
    "explain": "where (face regions) and when (frames) a clip matched a class or a text: heat maps",
    "caption": "FineCLIPER: describe each clip's facial movements with a multimodal LLM (caption file)",
    "weights": "published weights by name: list, info, download, push to the Hugging Face Hub",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dferclip",
                                     description="dferclip: facial expressions in video with CLIP (DFER-CLIP, FineCLIPER)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    modules = {}
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the command that runs is imported (and its imports): checks come first
            modules[name] = importlib.import_module(f".commands.{name}", __package__)
            modules[name].add_arguments(command)
    args = parser.parse_args(argv)
    logs.configure(logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(modules[args.command].run(args) or 0)
    except DferclipError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
