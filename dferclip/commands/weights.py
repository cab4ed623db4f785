"""weights: the published weights by name (list, info, download, push to the Hugging Face Hub)."""
from __future__ import annotations

import json
import sys

from ..errors import CheckpointError
from ..weights import fetch, published


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="every published entry and whether it is cached")
    ls.add_argument("--json", action="store_true")
    info = sub.add_parser("info", help="an entry's facts (architecture, classes, host, licence, figures, cache)")
    info.add_argument("name")
    info.add_argument("--json", action="store_true")
    dl = sub.add_parser("download", help="fetch, verify and convert entries into the cache")
    dl.add_argument("names", nargs="+", metavar="NAME")
    dl.add_argument("--file", help="use this already downloaded official .pth instead (one NAME)")
    push = sub.add_parser("push", help="upload a converted entry to a Hub model repo, with a model card")
    push.add_argument("name")
    push.add_argument("repo_id", help="org/name of the Hub model repo (created if missing)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--folder", help="only write the repo's files into this folder (no upload)")


def _entry(name: str) -> published.PublishedWeights:
    entry = published.get_entry(name)
    if entry is None:
        names = ", ".join(e.name for e in published.entries())
        raise CheckpointError(f"no published weights called {name!r}; known: {names}")
    return entry


def _cached_file(entry) -> dict:
    """What was downloaded for a cached entry (size, sha256, url), from its config.json."""
    cfg = published.cache_folder(entry) / "config.json"
    if not cfg.is_file():
        return {}
    return (json.loads(cfg.read_text()).get("weights") or {}).get("file") or {}


def _facts(entry) -> dict:
    from ..text.descriptions import load_class_sets

    cached = published.is_cached(entry)
    return {"name": entry.name, "title": entry.title, "family": entry.family, "config": entry.config,
            "dataset": entry.dataset, "fold": entry.fold, "classes": load_class_sets().get(entry.class_set),
            "host": entry.host_text, "download": fetch.download_url(entry), "source": entry.source,
            "licence": entry.licence, "paper": entry.paper, "size": entry.size, "sha256": entry.sha256,
            "cached": cached, "cache": str(published.cache_folder(entry)) if not entry.load_source else None,
            "downloaded": _cached_file(entry) or None}


def run(args) -> int:
    if args.action == "list":
        rows = [_facts(e) for e in published.entries()]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'name':<22} {'weights':<30} {'classes':<8} {'size':>9}  cached")
        for r in rows:
            size = (r["downloaded"] or {}).get("size") or r["size"]
            size = f"{size / 1e6:.0f} MB" if size else "?"
            print(f"{r['name']:<22} {r['title']:<30} {len(r['classes'] or []):<8} {size:>9}  "
                  f"{'yes' if r['cached'] else 'no'}")
        print(f"cache: {published.weights_root()}  registry: {published.registry_path()}")
        return 0
    if args.action == "info":
        facts = _facts(_entry(args.name))
        if args.json:
            print(json.dumps(facts, indent=2))
            return 0
        for key, value in facts.items():
            if isinstance(value, dict):
                value = "; ".join(f"{k}: {v}" for k, v in value.items() if v is not None)
            elif isinstance(value, list):
                value = ", ".join(value)
            print(f"{key:<11} {value}")
        return 0
    if args.action == "download":
        entries = [_entry(n) for n in args.names]
        if args.file:
            if len(entries) != 1:
                raise CheckpointError("--file goes with exactly one NAME")
            print(f"{entries[0].name}: {fetch.install_file(entries[0], args.file)}")
            return 0
        for entry in entries:
            if entry.load_source:  # open_clip's own download and cache
                from ..weights.checkpoints import load_model

                load_model(entry.load_source)
                print(f"{entry.name}: in the Hugging Face cache")
                continue
            print(f"{entry.name}: {fetch.ensure_cached(entry)}", flush=True)
        return 0
    if args.action == "push":
        from ..weights import push

        entry = _entry(args.name)
        if entry.load_source:
            raise CheckpointError(f"{entry.name} is open_clip's own download; there is nothing to push")
        if args.folder:
            print(f"wrote {push.build_folder(entry, args.folder, args.repo_id)}")
            return 0
        print(f"pushed {entry.name} to {push.push(entry, args.repo_id, private=args.private)}", file=sys.stdout)
        return 0
    return 2
