"""describe: generate, check, diff, score and evaluate class description sets.

    python -m dferclip describe list
    python -m dferclip describe generate --classes DFEW --style cupl --name my-cupl [--model M --base-url URL]
    python -m dferclip describe generate --classes DFEW --name my-local --backend local [--local-model NAME]
    python -m dferclip describe check [--set NAME]
    python -m dferclip describe diff A B
    python -m dferclip describe score --clip VIDEO [--checkpoint SRC] [--set NAME] [--combine MODE]
    python -m dferclip describe evaluate --data FOLDER --labels CSV [--set NAME ...] [--checkpoint SRC]
"""
from __future__ import annotations

import json
import sys

from ..scoring import COMBINE_MODES
from ..text.descriptions import (
    diff_description_sets,
    list_description_sets,
    load_description_set,
)


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="list saved description sets")

    g = sub.add_parser("generate", help="ask an LLM (a server, or a small local model) for descriptions; save "
                                         "them as a new set")
    g.add_argument("--classes", default="DFEW", help="DFEW, FERV39k, MAFW or comma-separated custom class names")
    g.add_argument("--style", default="dferclip", help="prompt style: dferclip, cupl, dclip, contrastive")
    g.add_argument("--prompt", help="user prompt template replacing the style's ({name} {others} {n} {example})")
    g.add_argument("-n", type=int, help="descriptions per class")
    g.add_argument("--name", required=True, help="name of the new set (saved in descriptions/local/, or $DFERCLIP_DESCRIPTIONS)")
    g.add_argument("--model", help="LLM model (default: $DFERCLIP_LLM_MODEL)")
    g.add_argument("--base-url", help="OpenAI-compatible base URL (default: $OPENAI_BASE_URL or OpenAI)")
    g.add_argument("--backend", choices=["openai", "local"],
                   help="openai: an OpenAI-compatible server; local: a small instruct model run here (downloaded "
                        "once from the Hugging Face Hub). Default: $DFERCLIP_LLM_BACKEND, else openai when "
                        "OPENAI_BASE_URL/OPENAI_API_KEY or --base-url is set, else local")
    g.add_argument("--local-model", help="local model name (implies --backend local; default: the registry's, "
                                         "see dferclip/text/local_models.json)")
    g.add_argument("--max-new-tokens", type=int, default=200, help="local backend: longest reply in tokens")
    g.add_argument("--temperature", type=float, default=0.7, help="0: greedy (local backend)")
    g.add_argument("--timeout", type=float, default=60.0,
                   help="seconds for one request in all (retries included), not per read")
    g.add_argument("--show-prompt", action="store_true", help="print the prompts sent")

    c = sub.add_parser("check", help="flag label leaks and descriptions too long for CLIP's 77 tokens")
    c.add_argument("--set", default="dferclip-official-dfew", help="set name or .json path")
    c.add_argument("--n-ctx", type=int, default=8, help="learned context tokens in front of each description")

    d = sub.add_parser("diff", help="what changed between two sets")
    d.add_argument("a")
    d.add_argument("b")

    cp = sub.add_parser("compare", help="two sets on a labelled clip set: UAR/WAR of each and of B - A with paired "
                                        "bootstrap intervals, an exact McNemar test, per-class recall, flipped clips")
    cp.add_argument("a", help="set A: a name or .json path")
    cp.add_argument("b", help="set B: a name or .json path")
    cp.add_argument("--eval", required=True, help="CSV with path,label rows, or a datasets folder (save_to_disk)")
    cp.add_argument("--data", help="folder the CSV's paths are relative to (default: the CSV's folder)")
    cp.add_argument("--model", "--checkpoint", dest="checkpoint", default=None,
                    help="model source (default: random weights)")
    cp.add_argument("--combine", default="mean-embedding", choices=COMBINE_MODES)
    cp.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    cp.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default 0)")
    cp.add_argument("--cache-dir", default=None, help="embedding cache folder")
    cp.add_argument("--json", action="store_true", help="print JSON")

    fl = sub.add_parser("from-link", help="the description set a workbench link carries, as a .json file")
    fl.add_argument("link", help="the link (or its ?s= value)")
    fl.add_argument("-o", "--output", required=True, help="the .json file to write (never overwritten)")

    for name, text in (("score", "zero-shot and learned-prompt scores of one clip"),
                       ("evaluate", "UAR/WAR per set on a labelled clip set")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--checkpoint", default=None, help="model source (default: random weights)")
        s.add_argument("--set", action="append", help="description set(s) (default: the model's own)")
        s.add_argument("--combine", default="mean-embedding", choices=COMBINE_MODES)
        s.add_argument("--json", action="store_true", help="print JSON")
    sub.choices["score"].add_argument("--clip", required=True, help="video file")
    ev = sub.choices["evaluate"]
    ev.add_argument("--data", help="folder the CSV's paths are relative to (default: the CSV's folder)")
    ev.add_argument("--labels", help="CSV with path,label rows")
    ev.add_argument("--hf-dataset", help="a datasets folder (save_to_disk) instead of --labels")
    ev.add_argument("--cache-dir", default=None, help="embedding cache folder")


def run(args) -> int:
    return {"list": _list, "generate": _generate, "check": _check, "diff": _diff, "score": _score,
            "evaluate": _evaluate, "compare": _compare, "from-link": _from_link}[args.action](args)


def _list(args) -> int:
    for name in list_description_sets():
        ds = load_description_set(name)
        print(f"{name}  v{ds.version}  {ds.class_set}  {ds.num_classes} classes")
    return 0


def _generate(args) -> int:
    from ..text.descriptions import save_description_set
    from ..text.llm import LLMSettings, generate
    from ..workbench import starting_set

    base = starting_set(args.classes, args.classes.split(","))
    backend = args.backend or ("local" if args.local_model else None)
    settings = LLMSettings.from_env(model=args.model, base_url=args.base_url, temperature=args.temperature,
                                    timeout=args.timeout, backend=backend, local_model=args.local_model,
                                    max_new_tokens=args.max_new_tokens)
    print(f"generating with {settings.describe()}", file=sys.stderr)

    def progress(i, n, cls):
        print(f"[{i + 1}/{n}] {cls}", file=sys.stderr)

    gen = generate(base.classes, args.style, settings=settings, template=args.prompt, n=args.n, progress=progress)
    ds = gen.to_description_set(args.name, base.class_set)
    for cls, prompt, descs, flags in zip(gen.classes, gen.prompts, gen.descriptions, gen.flags):
        if args.show_prompt:
            print(f"# prompt for {cls}:\n{prompt}")
        for d, fl in zip(descs, flags):
            print(f"{cls}: {d}" + "".join(f"  [{f.kind}: {f.message}]" for f in fl))
    print(f"saved {save_description_set(ds)}")
    return 0


def _check(args) -> int:
    from ..config import ModelConfig
    from ..text.llm import check_description

    ds = load_description_set(args.set)
    templates = ModelConfig().zero_shot_templates
    n = 0
    for cls, descs in zip(ds.classes, ds.descriptions):
        for d in descs:
            for f in check_description(d, cls, ds.classes, reserved_tokens=args.n_ctx, templates=templates):
                n += 1
                print(f"{cls}: {f.kind}: {f.message}\n    {d}")
    print(f"{n} flag(s) in {ds.name} v{ds.version}")
    return 1 if n else 0


def _diff(args) -> int:
    rows = diff_description_sets(load_description_set(args.a), load_description_set(args.b))
    for r in rows:
        print(f"{r['class']}:")
        print("".join(f"  - {d}\n" for d in r["removed"]) + "".join(f"  + {d}\n" for d in r["added"]), end="")
    if not rows:
        print("no differences")
    return 0


def _workbench(args):
    from ..weights.checkpoints import load_model
    from ..workbench import Workbench

    model = load_model(args.checkpoint or "random")
    sets = [load_description_set(s) for s in (args.set or [])] or [model.descriptions]
    return Workbench(model, sets[0], combine=args.combine), sets


def _score(args) -> int:
    wb, sets = _workbench(args)
    name = wb.add_clip_file(args.clip)
    results = {}
    for ds in sets:
        wb.start_from(ds)
        results[ds.name] = wb.score_clips([name])["clips"][name]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for set_name, modes in results.items():
        print(f"== {set_name} ({args.combine})")
        print(f"{'class':<16}" + "".join(f"{m:>12}" for m in modes))
        for i, cls in enumerate(wb.current.classes):
            print(f"{cls:<16}" + "".join(f"{modes[m]['probs'][i]:>11.1f}%" for m in modes))
        print("prediction: " + ", ".join(f"{m} {modes[m]['prediction']}" for m in modes))
    return 0


def _evaluate(args) -> int:
    from ..errors import DataError
    from ..progress import progress_callback
    from ..labelled import read_hf_dataset, read_labels_csv
    from ..workbench import DEFAULT_CACHE_DIR

    wb, sets = _workbench(args)
    if args.hf_dataset:
        clips = read_hf_dataset(args.hf_dataset, wb.current.classes)
    elif args.labels:
        clips = read_labels_csv(args.labels, wb.current.classes, args.data)
    else:
        raise DataError("give --labels CSV (with --data FOLDER) or --hf-dataset FOLDER")

    wb.set_evaluation(clips, cache_dir=args.cache_dir or DEFAULT_CACHE_DIR,
                      progress=progress_callback("embedding", unit="clip"))
    out = {}
    for ds in sets:
        wb.start_from(ds)
        ev = wb.evaluate()
        out[ds.name] = {m: r["current"].to_dict(ds.classes) for m, r in ev["modes"].items()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{len(wb.evaluation)} clips" + (f", {len(wb.evaluation.failed)} unreadable" if wb.evaluation.failed else ""))
    print(f"{'set':<32}{'mode':<11}{'UAR':>8}{'WAR':>8}")
    for name, modes in out.items():
        for mode, m in modes.items():
            print(f"{name:<32}{mode:<11}{m['uar']:>8.2f}{m['war']:>8.2f}")
    return 0


def _compare(args) -> int:
    from pathlib import Path

    from ..labelled import read_hf_dataset, read_labels_csv
    from ..progress import progress_callback
    from ..weights.checkpoints import load_model
    from ..workbench import DEFAULT_CACHE_DIR, Workbench

    model = load_model(args.checkpoint or "random")
    a, b = load_description_set(args.a), load_description_set(args.b)
    wb = Workbench(model, a, combine=args.combine)
    clips = (read_hf_dataset(args.eval, wb.current.classes) if Path(args.eval).is_dir()
             else read_labels_csv(args.eval, wb.current.classes, args.data))
    wb.set_evaluation(clips, cache_dir=args.cache_dir or DEFAULT_CACHE_DIR,
                      progress=progress_callback("embedding", unit="clip"))
    out = wb.compare(a, b, resamples=args.resamples, seed=args.seed)
    if args.json:
        print(json.dumps({**out, "modes": {m: {**r["comparison"].to_dict(out["classes"]), "flipped": r["flipped"]}
                                            for m, r in out["modes"].items()}}, indent=2))
        return 0
    print(compare_table(out))
    return 0


def compare_table(out: dict) -> str:
    """The comparison as text: per mode, UAR and WAR of A, B and B - A with their intervals, McNemar, per-class
    recall, then the clips whose prediction flips."""
    from ..metrics import SMALL_CLASS

    lines = [f"A: {out['a']}    B: {out['b']}    {out['n']} labelled clips"]
    for mode, r in out["modes"].items():
        c = r["comparison"]
        pct = f"{100 * c.confidence:.0f} %"
        lines += ["", f"== {mode}", f"{'':<6}{'A':>22}{'B':>22}{'B - A':>24}"]
        for metric in ("uar", "war"):
            ia, ib, d = getattr(c, f"{metric}_a"), getattr(c, f"{metric}_b"), getattr(c, f"{metric}_diff")
            cell = lambda i, sign="": f"{i.estimate:{sign}.1f} [{i.low:{sign}.1f}, {i.high:{sign}.1f}]"  # noqa: E731
            lines.append(f"{metric.upper():<6}{cell(ia):>22}{cell(ib):>22}{cell(d, '+'):>24}")
        lines.append(f"{pct} paired bootstrap intervals ({c.resamples} resamples within each class, seed {c.seed}); "
                     f"McNemar (exact): {c.mcnemar.a_only} clip(s) right only under A, {c.mcnemar.b_only} only under "
                     f"B, p = {c.mcnemar.p:.3g}")
        if c.small_classes:
            small = ", ".join(out["classes"][k] for k in c.small_classes)
            lines.append(f"! fewer than {SMALL_CLASS} clips in {small}: the intervals cannot show how uncertain these "
                         "classes are; label more clips")
        lines.append(f"{'recall %':<16}{'A':>8}{'B':>8}")
        for k, cls in enumerate(out["classes"]):
            ra, rb = c.a.recall[k], c.b.recall[k]
            if ra == ra:  # a class absent from the labels has no recall
                lines.append(f"{cls:<16}{ra:>8.1f}{rb:>8.1f}")
        flips = r["flipped"]
        lines.append(f"{len(flips)} clip(s) change prediction" + (":" if flips else ""))
        lines += [f"  {f['path']}: label {f['label']}, A {f['a']} -> B {f['b']}" for f in flips]
    return "\n".join(lines)


def _from_link(args) -> int:
    from pathlib import Path

    from ..errors import DescriptionError
    from ..files import write_json
    from ..share import state_from_link

    state = state_from_link(args.link)
    out = Path(args.output)
    if out.exists():
        raise DescriptionError(f"{out} exists; choose another name (an earlier file is never overwritten)")
    write_json(out, state.descriptions.to_dict())
    clip = f", example clip {state.clip}" if state.clip else ""
    print(f"{out}: {state.descriptions.name}, {state.descriptions.num_classes} classes "
          f"({sum(len(d) for d in state.descriptions.descriptions)} descriptions); model {state.model}, "
          f"combine {state.combine}{clip}")
    return 0
