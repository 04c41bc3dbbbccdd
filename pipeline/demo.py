"""``ofa demo``: the whole pipeline on an embedded catalog, offline, in a few minutes on a CPU.

1. write the demo catalog (small COGs + STAC Items for Sentinel-2, Sentinel-1, Landsat, NAIP);
2. serve it from a real STAC API on 127.0.0.1 (``rustac serve``);
3. ingest it through pystac-client into WebDataset shards + manifest;
4. pretrain a tiny shared-backbone MAE under Accelerate;
5. write a checkpoint, a loss-curve PNG and a reconstruction PNG.

Every stage reuses what a previous run left: a second run only re-checks and re-plots.
"""
from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ofa.ingest.options import Flag, add_options


@dataclass
class DemoConfig:
    """What the demo builds; the defaults finish in a few minutes on 2 CPU cores."""

    out: str = "ofa-demo"
    steps: int = 300
    batch_size: int = 8
    img_size: int = 64
    patch_size: int = 8     # 8 x 8 tokens at 64 px: enough context for a tiny MAE to learn in minutes
    lr: float = 0.05        # per 256 images (MAE convention): 1.6e-3 at batch 8
    chip_size: int = 128
    size: str = "tiny"
    embedding: str = "ofa"
    seed: int = 0
    workers: int | None = None   # ingest workers; None: one per CPU of the thread budget
    threads: int | None = None   # CPU budget (pipeline.threads); None: OMP_NUM_THREADS, else the CPUs this process may use
    progress: bool = True


def _stage(number: int, title: str) -> float:
    print(f"\n[{number}/5] {title}", flush=True)
    return time.monotonic()


def _done(start: float, what: str) -> None:
    print(f"      {what} ({time.monotonic() - start:.1f} s)", flush=True)


def run_demo(cfg: DemoConfig) -> dict[str, Path]:
    """Run the demo; return the paths of what it made."""
    from ofa.infra.demo_catalog import DEMO_COLLECTIONS, write_demo_catalog
    from ofa.infra.localstack import stac_server
    from ofa.ingest.job import IngestConfig, run_ingest
    from ofa.ingest.manifest import verify_dataset
    from ofa.pipeline.plots import plot_loss_curve, plot_reconstructions
    from ofa.pipeline.threads import cpu_budget
    from ofa.pipeline.train import TrainConfig, train

    out = Path(cfg.out).resolve()
    paths = {
        "catalog": out / "catalog",
        "dataset": out / "dataset",
        "train": out / "train",
        "loss_curve": out / "loss_curve.png",
        "reconstructions": out / "reconstructions.png",
    }

    t = _stage(1, f"demo catalog -> {paths['catalog']}")
    collections, items = write_demo_catalog(paths["catalog"])
    _done(t, f"{len(items)} items in {len(collections)} collections")

    t = _stage(2, "STAC API on 127.0.0.1 (rustac serve) + ingest -> WebDataset shards")
    manifest_ok = False
    if (paths["dataset"] / "manifest.json").exists():
        manifest_ok, problems = verify_dataset(str(paths["dataset"]))
        print("      reusing the dataset already there" if manifest_ok else f"      dataset incomplete ({problems[:1]}), resuming")
    if not manifest_ok:
        with stac_server(collections, items) as url:
            print(f"      catalog served at {url}")
            manifest = run_ingest(IngestConfig(
                catalog=url, collections=list(DEMO_COLLECTIONS), out=str(paths["dataset"]),
                chip_size=cfg.chip_size, workers=cfg.workers or cpu_budget(cfg.threads)[0], progress=cfg.progress,
            ))
        ok, problems = verify_dataset(str(paths["dataset"]))
        if not ok:
            raise RuntimeError(f"the demo dataset does not verify: {problems}")
        shards = manifest["shards"]
        print(f"      {sum(s['count'] for s in shards)} samples in {len(shards)} shards; manifest verifies")
    _done(t, f"dataset at {paths['dataset']}")

    t = _stage(3, f"pretraining a {cfg.size} shared-backbone MAE ({cfg.embedding} embedding) for {cfg.steps} steps on CPU")
    summary = train(TrainConfig(
        data=[str(paths["dataset"])], size=cfg.size, embedding=cfg.embedding, steps=cfg.steps,
        batch_size=cfg.batch_size, img_size=cfg.img_size, patch_size=cfg.patch_size, lr=cfg.lr, seed=cfg.seed, save_every=max(cfg.steps // 2, 1),
        out=str(paths["train"]), resume="auto", cpu=True, threads=cfg.threads,
    ))
    _done(t, f"final loss {summary.get('loss')}")

    t = _stage(4, "plots")
    plot_loss_curve(paths["train"] / "log.jsonl", paths["loss_curve"])
    plot_reconstructions(summary["checkpoint"], [str(paths["dataset"])], paths["reconstructions"], img_size=cfg.img_size, seed=cfg.seed)
    _done(t, "loss curve and reconstructions written")

    _stage(5, "where everything went")
    paths["checkpoint"] = Path(summary["checkpoint"])
    for name, path in paths.items():
        print(f"      {name:16s} {path}")
    return paths


def _main(args: argparse.Namespace) -> int:
    from ofa.ingest.options import from_args
    from ofa.pipeline.threads import use_cpu_threads

    cfg = from_args(DemoConfig, args)
    threads = use_cpu_threads(cfg.threads)  # before anything loads torch
    print(f"CPU threads: {threads.intra_op} for torch, from {threads.source}")
    if args.fresh and Path(args.out).exists():
        shutil.rmtree(args.out)
    run_demo(cfg)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ofa demo``."""
    p = subparsers.add_parser(
        "demo", help="run the whole pipeline offline on an embedded catalog",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from ofa.pipeline.train import TRAIN_FLAGS  # the demo's training knobs are training's

    add_options(p, DemoConfig, {
        "out": Flag("folder for everything the demo makes"),
        **{k: TRAIN_FLAGS[k] for k in ("steps", "batch_size", "img_size", "patch_size", "lr", "size", "embedding", "seed")},
        "chip_size": Flag("chip size in pixels"),
        "workers": Flag("ingest workers", default_text="one per CPU of --threads"),
        "threads": TRAIN_FLAGS["threads"],
        "progress": Flag("no progress bars"),
    })
    p.add_argument("--fresh", action="store_true", help="delete --out first instead of reusing it")
    p.set_defaults(func=_main)
