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
from pathlib import Path

from ofa.infra.demo_catalog import DEMO_COLLECTIONS, write_demo_catalog
from ofa.infra.localstack import stac_server
from ofa.ingest.dataset.manifest import verify_dataset
from ofa.ingest.job import IngestConfig, run_ingest
from ofa.pipeline.config import DemoConfig
from ofa.pipeline.options import build
from ofa.pipeline.plots import plot_loss_curve, plot_reconstructions
from ofa.pipeline.threads import cpu_budget
from ofa.pipeline.trainer import TrainConfig, train


def _stage(number: int, title: str) -> float:
    print(f"\n[{number}/5] {title}", flush=True)
    return time.monotonic()


def _done(start: float, what: str) -> None:
    print(f"      {what} ({time.monotonic() - start:.1f} s)", flush=True)


def run_demo(cfg: DemoConfig) -> dict[str, Path]:
    """Run the demo; return the paths of what it made."""
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
            manifest = run_ingest(IngestConfig(   # the loopback catalog names files of this machine: allowed here
                catalog=url, allow_local_hrefs=True, collections=list(DEMO_COLLECTIONS), out=str(paths["dataset"]),
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


def run_command(args: argparse.Namespace) -> int:
    """``ofa demo``: ``args`` holds ``DemoConfig``'s options (the ``ofa`` command set the CPU threads already)."""
    cfg = build(DemoConfig, vars(args))
    threads = getattr(args, "cpu_threads", None)
    if threads is not None:
        print(f"CPU threads: {threads.intra_op} for torch ({threads.budget} CPUs, from {threads.source}); "
              f"OpenMP waits: {threads.wait}")
    if cfg.fresh and Path(cfg.out).exists():
        shutil.rmtree(cfg.out)
    run_demo(cfg)
    return 0
