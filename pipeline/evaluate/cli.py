"""``ofa eval geobench``: evaluate checkpoints on GEO-Bench tasks; write CSV, markdown and a bar chart. Its options
are the fields of ``GeoBenchOptions``, ``EvalOptions`` and ``BackboneSpec`` (``.options``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import BackboneSpec, EvalOptions


def _checkpoints(args: argparse.Namespace) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if args.checkpoint:
        label = "random" if args.checkpoint == "random" else Path(args.checkpoint.rstrip("/")).name or args.checkpoint
        pairs.append((label, args.checkpoint))
    for item in args.compare or []:
        label, sep, ckpt = item.partition("=")
        if not sep or not label or not ckpt:
            raise ValueError(f"--compare expects LABEL=CHECKPOINT, got {item!r}")
        pairs.append((label, ckpt))
    if not pairs:
        raise ValueError("give --checkpoint PATH|random or --compare LABEL=CHECKPOINT ...")
    labels = [p[0] for p in pairs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--compare: checkpoint labels must differ, got {labels}")
    return pairs


def list_tasks(tasks: list, embedding: str) -> str:
    """One line per task: kind, classes, samples per split and the model inputs with zero-filled bands."""
    from .bands import plan_inputs

    lines = []
    for t in tasks:
        sizes = "/".join(str(len(v)) for v in t.partition("default").values()) if "default" in t.partitions() else "?"
        try:
            inputs = ", ".join(f"{g.modality}[{g.channels}]" + (f" zero-filled {'+'.join(g.missing)}" if g.missing else "")
                               for g in plan_inputs(t, embedding))
        except ValueError as exc:
            inputs = f"not mappable: {exc}"
        lines.append(f"{t.name:28s} {t.kind:14s} {t.n_classes:3d} classes  train/valid/test {sizes:16s} {inputs}")
    return "\n".join(lines)


def _select_tasks(args: argparse.Namespace) -> list:
    """The tasks ``--tasks`` names under ``--root``, loaded (their pickles read through the safe unpickler)."""
    from .geobench import discover_tasks, load_task

    found = discover_tasks(args.root)
    names = list(found) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in found]
    if unknown:
        raise ValueError(f"--tasks: unknown task(s) {unknown}; found under {args.root}: {sorted(found)}")
    return [load_task(found[n]) for n in names]


def _sources(args: argparse.Namespace) -> list[tuple[str, object]]:
    """``(label, MaeSource)`` per checkpoint, each checked once before any task runs."""
    from .runner import MaeSource

    storage = args.storage_options
    sources = []
    for label, ckpt in _checkpoints(args):
        source = MaeSource(BackboneSpec(ckpt, size=args.size, embedding=args.embedding, img_size=args.img_size,
                                        patch_size=args.patch_size, storage_options=storage))
        source.check()
        sources.append((label, source))
    return sources


def run_geobench(args: argparse.Namespace) -> int:
    """``ofa eval geobench``: bad options, folders and checkpoints stop it with one line before any task."""
    from tqdm import tqdm

    from ofa.pipeline.options import build

    from .geobench import GeoBenchError
    from .report import markdown_table, summarise, write_reports
    from .runner import evaluate_task

    if not args.list and not args.out:
        raise ValueError("--out DIR is required")
    if args.seeds < 1:
        raise ValueError("--seeds must be >= 1")
    tasks = _select_tasks(args)
    if args.list:
        print(list_tasks(tasks, args.embedding or "ofa"))
        return 0
    sources = _sources(args)
    opts = build(EvalOptions, vars(args))
    results, failures = [], []
    bar = tqdm(total=len(sources) * len(tasks), desc="geobench", dynamic_ncols=True)
    for label, source in sources:
        for task in tasks:
            bar.set_postfix_str(f"{label} {task.name}")
            try:
                results.extend(evaluate_task(task, label, source, opts))
            except (GeoBenchError, ValueError) as exc:
                failures.append(f"{label} / {task.name}: {exc}")
                print(f"ofa eval geobench: skipped {label} / {task.name}: {exc}", file=sys.stderr)
            bar.update(1)
    bar.close()
    if not results:
        print("ofa eval geobench: error: no task could be evaluated", file=sys.stderr)
        return 1
    paths = write_reports(results, args.out)
    if failures:
        (Path(args.out) / "geobench_skipped.txt").write_text("\n".join(failures) + "\n")
    print(markdown_table(summarise(results)))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 1 if failures else 0
