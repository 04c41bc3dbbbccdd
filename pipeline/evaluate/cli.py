"""``ofa eval geobench``: evaluate checkpoints on GEO-Bench tasks; write CSV, markdown and a bar chart."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ofa.ingest.options import Flag, add_options, from_args

from .options import PROTOCOLS, BackboneSpec, EvalOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ofa eval`` with its ``geobench`` subcommand."""
    ev = subparsers.add_parser("eval", help="evaluate checkpoints on downstream benchmarks",
                               description="Evaluate checkpoints on downstream benchmarks.")
    ev.set_defaults(func=lambda args: (ev.print_help(), 2)[1])
    sub = ev.add_subparsers(dest="eval_command", metavar="BENCHMARK")
    p = sub.add_parser(
        "geobench", help="GEO-Bench classification and segmentation tasks",
        description="Evaluate one checkpoint (or several with --compare) on GEO-Bench as released "
                    "(classification_v1.0/ and segmentation_v1.0/ under --root). Writes geobench_runs.csv "
                    "(per seed), geobench_results.csv and geobench_results.md (mean ± std over seeds) and "
                    "geobench_results.png into --out.",
    )
    p.add_argument("--root", required=True, help="GEO-Bench folder (holding classification_v1.0/, segmentation_v1.0/)")
    p.add_argument("--checkpoint", help="checkpoint path or URL (file://, s3://), or 'random' for a random init")
    p.add_argument("--compare", nargs="+", metavar="LABEL=CHECKPOINT",
                   help="several checkpoints side by side, e.g. random=random s2=ckpt/s2 multi=s3://b/multi")
    p.add_argument("--tasks", default="all", help="'all' or comma-separated task names (default: all)")
    add_options(p, EvalOptions, {
        "protocol": Flag("linear: frozen backbone + linear head / UPerNet-style decoder; finetune: train everything",
                         choices=PROTOCOLS),
        "partition": Flag("partition file prefix: default, 0.10x_train, ..."),
        "seeds": Flag("number of seeds (0..N-1)"),
    })
    p.add_argument("--out", help="output folder (required unless --list)")
    p.add_argument("--list", action="store_true",
                   help="list the tasks found under --root and how their bands map to model inputs, then exit")
    add_options(p, BackboneSpec, {
        "img_size": Flag("model input size", default_text="the checkpoint's; 224 for random"),
        "size": Flag("backbone size for --checkpoint random"),
        "patch_size": Flag("patch size for --checkpoint random"),
        "embedding": Flag("patch embedding: per-sensor (ofa) or wavelength-conditioned", choices=("ofa", "wavelength"),
                          default_text="the checkpoint's; ofa for random"),
    })
    add_options(p, EvalOptions, {
        "batch_size": Flag("samples per batch"),
        "num_workers": Flag("data loader worker processes"),
        "device": Flag("auto, cpu, cuda, cuda:1 ..."),
        "probe_epochs": Flag("linear-probe epochs over cached features"),
        "seg_epochs": Flag("frozen-decoder epochs over cached features"),
        "decoder_channels": Flag("width of the segmentation decoder"),
        "finetune_epochs": Flag("fine-tuning epochs", flag="--epochs"),
        "lr": Flag("fine-tuning backbone learning rate"),
        "max_samples": Flag("use at most N samples per split (quick runs)"),
        "threads": Flag("torch's CPU threads (OMP_NUM_THREADS, when set, wins)", default_text="the CPUs this process may use"),
    })
    p.add_argument("--storage-options", default=None, help="JSON dict of fsspec options for s3:// checkpoints")
    p.set_defaults(func=run_geobench)


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

    storage = json.loads(args.storage_options) if args.storage_options else None
    sources = []
    for label, ckpt in _checkpoints(args):
        source = MaeSource(BackboneSpec(ckpt, size=args.size, embedding=args.embedding, img_size=args.img_size,
                                        patch_size=args.patch_size, storage_options=storage))
        source.check()
        sources.append((label, source))
    return sources


def run_geobench(args: argparse.Namespace) -> int:
    """``ofa eval geobench``: bad options, folders and checkpoints stop it with one line before any task."""
    from ofa.pipeline.threads import use_cpu_threads

    use_cpu_threads(args.threads)  # before torch loads
    from tqdm import tqdm

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
    opts = from_args(EvalOptions, args)
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
