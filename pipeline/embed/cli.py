"""``ofa embed``: the options, and one-line errors at the edge."""
from __future__ import annotations

import argparse
import json
import os
import sys

from ofa.ingest.options import json_object

DESCRIPTION = """\
Embed every sample of one or more datasets with a trained checkpoint: each sample is normalised as in
training (the manifest's statistics), resized to the model's input size, encoded without masking and
pooled to one vector. Writes a Zarr store (default) or a GeoParquet file, region by region: a killed
run resumes with the same command, a finished one is left as it is. Several processes (one per GPU):
accelerate launch -m ofa.pipeline.embed [same options]."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``ofa embed``."""
    p.add_argument("--checkpoint", required=True,
                   help="what training wrote: the run folder (its last checkpoint), a step-NNNNNNNN folder, or its model/ folder")
    p.add_argument("--data", action="append", required=True, help="dataset URL (folder, file:// or s3://); repeatable")
    p.add_argument("--out", required=True, help="output: a folder or s3://.../name.zarr (zarr), a .parquet path or URL (geoparquet)")
    p.add_argument("--format", choices=["zarr", "geoparquet"], default=None,
                   help="output layout (default: geoparquet if --out ends in .parquet, else zarr)")
    p.add_argument("--pool", choices=["mean", "cls"], default="mean",
                   help="token pooling (default: mean; OFA-Net has no class token, so cls is refused)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per forward pass (default: %(default)s)")
    p.add_argument("--chunk-size", type=int, default=1024,
                   help="samples per region: the unit written, resumed and split across processes, and the "
                        "output chunk along sample (default: %(default)s)")
    p.add_argument("--storage-options", type=json_object, default=None, metavar="JSON",
                   help="fsspec options for s3:// URLs, e.g. '{\"endpoint_url\": \"http://127.0.0.1:9000\"}'")
    p.add_argument("--cpu", action="store_true", help="run on CPU even if a GPU is present")
    p.add_argument("--preview", default="", metavar="PNG",
                   help="where the PCA map goes (default: OUT.preview.png; 'none' for no map)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None,
                   help="torch's CPU threads (OMP_NUM_THREADS, when set, wins; default: the CPUs this process may use)")


def _run(args: argparse.Namespace) -> int:
    from ofa.pipeline.threads import use_cpu_threads

    use_cpu_threads(args.threads)  # before torch loads
    from ofa.pipeline.embed.job import EmbedConfig, run_embed

    fmt = args.format or ("geoparquet" if args.out.rstrip("/").endswith(".parquet") else "zarr")
    cfg = EmbedConfig(checkpoint=args.checkpoint, data=args.data, out=args.out, format=fmt, pool=args.pool,
                      batch_size=args.batch_size, chunk_size=args.chunk_size, storage_options=args.storage_options,
                      cpu=args.cpu, preview=None if args.preview == "none" else args.preview,
                      progress=not args.no_progress, threads=args.threads)
    summary = run_embed(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        if summary["status"] == "already done":
            print(f"{cfg.out}: already done ({summary['samples']} samples); nothing to do", file=sys.stderr)
        print(json.dumps(summary))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ofa embed``."""
    from ofa.pipeline.cli import add_command

    add_command(subparsers, "embed", "embeddings of a dataset from a checkpoint, in Zarr or GeoParquet", DESCRIPTION,
                add_arguments, _run)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``accelerate launch -m ofa.pipeline.embed``."""
    from ofa.pipeline.cli import launch_main

    return launch_main("ofa.pipeline.embed", DESCRIPTION, add_arguments, _run, argv)
