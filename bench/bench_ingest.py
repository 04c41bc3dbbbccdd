"""Benchmark: chips/s of ``ofa ingest`` against rasterio baselines measured in the same run.

The catalog is the demo catalog's four sensors with larger scenes (``--size`` pixels on the finest
grid), served by a real STAC API on 127.0.0.1. Both baselines visit the same chip windows and read
each band (and the cloud mask) with one ``read`` per band per chip, with no filtering, encoding or
writing: "open once" opens each asset once per item, "open per read" (the naive loop) opens the
asset for every read. ``ofa ingest`` is timed end to end (search, Dask cluster start, reads,
filters, statistics, encoding, shards, manifest). It also reports the share of shard bytes the
Dask workers wrote themselves (item shards) rather than the client.

    python bench/bench_ingest.py --size 1024 --chip-size 256 --workers 2            # local files
    python bench/bench_ingest.py --size 1024 --chip-size 256 --workers 8 --remote   # COGs on local S3

``--remote`` uploads the COGs to the local S3 server (moto, 127.0.0.1) and rewrites the hrefs to
``s3://``, so every chip read is an HTTP range request as with a real cloud catalog.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path


def _scenes(size: int):
    from ofa.infra.demo_catalog import DEMO_SCENES

    out = []
    for s in DEMO_SCENES:
        factor = {"naip": 2, "landsat-c2-l2": 1}.get(s.collection, 1)
        n = (size * factor) // 128 * 128 if s.collection != "landsat-c2-l2" else max(size // 2 // 128 * 128, 256)
        out.append(dataclasses.replace(s, size=n))
    return tuple(out)


def baseline(items: list[dict], chip_size: int, reopen: bool = False) -> int:
    """Read each chip window band by band with rasterio; return the number of chip windows.

    ``reopen=False``: each asset is opened once per item. ``reopen=True``: the naive loop, which
    opens the asset for every band of every chip window.
    """
    import rasterio
    from rasterio.enums import Resampling

    from ofa.ingest.grid import bounds_window, chip_windows, grid_bounds
    from ofa.ingest.hrefs import LOCAL_FILES
    from ofa.ingest.items import plan_item
    from ofa.ingest.plans import read_href

    def read(ds, index: int, bounds) -> None:
        c0, r0, w, h = bounds_window(ds.transform, bounds)
        window = rasterio.windows.Window(c0, r0, w, h)
        ds.read(index, window=window, out_shape=(chip_size, chip_size), resampling=Resampling.nearest)

    chips = 0
    for item in items:
        plan = plan_item(item, policy=LOCAL_FILES)
        hrefs = list(dict.fromkeys([c.href for c in plan.channels] + ([plan.mask_href] if plan.mask_href else [])))
        datasets = {h: rasterio.open(read_href(h)) for h in hrefs}
        try:
            ref = min((datasets[c.href] for c in plan.channels), key=lambda d: abs(d.transform.a))
            reads = [(c.href, c.index) for c in plan.channels] + ([(plan.mask_href, 1)] if plan.mask_href else [])
            for row, col in chip_windows(ref.height, ref.width, chip_size):
                bounds = grid_bounds(ref.transform, col, row, chip_size, chip_size)
                for href, index in reads:
                    if reopen:
                        with rasterio.open(read_href(href)) as ds:
                            read(ds, index, bounds)
                    else:
                        read(datasets[href], index, bounds)
                chips += 1
        finally:
            for ds in datasets.values():
                ds.close()
    return chips


def upload_tree(root: Path, s3, bucket: str, prefix: str = "") -> str:
    """Upload everything under ``root`` to a new bucket of the local S3 server, point GDAL (and s3fs) at
    that server through the environment, and return the ``s3://`` URL the files now sit under."""
    import os

    import s3fs

    base = f"{s3.make_bucket(bucket)[len('s3://'):]}/{prefix}".rstrip("/")
    s3fs.S3FileSystem(**s3.storage_options).put(f"{root}/", f"{base}/", recursive=True)
    os.environ.update(s3.gdal_env)
    return f"s3://{base}"


def hrefs_under(items: list[dict], root: Path, base: str) -> list[dict]:
    """Copies of ``items`` whose hrefs under ``root`` point at the same files under ``base``."""
    root = root.resolve()
    items = json.loads(json.dumps(items))
    for item in items:
        for asset in item["assets"].values():
            path = Path(asset["href"].split("?")[0]).resolve()
            if path.is_relative_to(root):
                asset["href"] = f"{base}/{path.relative_to(root).as_posix()}"
    return items


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The ``ofa ingest`` run options both ingest benchmarks time it with."""
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--processes", action="store_true", help="Dask worker processes instead of threads")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each; the best is reported")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="finest-grid pixels per scene side (default: %(default)s)")
    add_run_options(parser)
    parser.add_argument("--remote", action="store_true", help="serve the COGs from the local S3 server (HTTP range reads)")
    parser.add_argument("--keep", help="folder for the catalog (reused between runs) instead of a temporary one")
    args = parser.parse_args(argv)

    from ofa.infra.demo_catalog import DEMO_COLLECTIONS, write_demo_catalog
    import contextlib

    from ofa.infra.localstack import s3_server, stac_server
    from ofa.ingest.job import IngestConfig, run_ingest

    work = Path(args.keep or tempfile.mkdtemp(prefix="ofa-bench-ingest-"))
    t = time.monotonic()
    collections, items = write_demo_catalog(work / f"catalog-{args.size}", _scenes(args.size))
    print(f"catalog: {len(items)} items, scenes up to {args.size * 2} px ({time.monotonic() - t:.1f} s to write)")
    base_times, naive_times, ingest_times, chips = [], [], [], 0
    with contextlib.ExitStack() as stack:
        if args.remote:
            s3 = stack.enter_context(s3_server())
            root = work / f"catalog-{args.size}"
            items = hrefs_under(items, root, upload_tree(root, s3, "ofa-bench-cogs", "cogs"))
            print(f"COGs on {s3.endpoint_url} (s3://ofa-bench-cogs)")
        baseline(items, args.chip_size)  # warm the caches for both contenders
        url = stack.enter_context(stac_server(collections, items))
        for i in range(args.repeat):
            t = time.monotonic()
            chips = baseline(items, args.chip_size)
            base_times.append(time.monotonic() - t)
            t = time.monotonic()
            baseline(items, args.chip_size, reopen=True)
            naive_times.append(time.monotonic() - t)
            out = work / f"dataset-{i}"
            shutil.rmtree(out, ignore_errors=True)
            t = time.monotonic()
            manifest = run_ingest(IngestConfig(catalog=url, allow_local_hrefs=True, collections=list(DEMO_COLLECTIONS), out=str(out),
                                               chip_size=args.chip_size, workers=args.workers, processes=args.processes,
                                               progress=False))
            ingest_times.append(time.monotonic() - t)
            counts = manifest["counts"]
            worker_bytes = sum(s["bytes"] for s in manifest["shards"] if "/items/" in s["path"])
            worker_share = worker_bytes / max(1, sum(s["bytes"] for s in manifest["shards"]))
            processed = counts["kept"] + sum(counts["dropped"].values())
            assert processed == chips, (processed, chips)
    base, naive, ours = chips / min(base_times), chips / min(naive_times), chips / min(ingest_times)
    result = {
        "chips": chips, "kept": counts["kept"], "dropped": counts["dropped"], "chip_size": args.chip_size,
        "workers": args.workers, "processes": args.processes, "remote": args.remote,
        "baseline_open_once_chips_per_s": round(base, 1), "baseline_open_per_read_chips_per_s": round(naive, 1),
        "ingest_chips_per_s": round(ours, 1), "shards": len(manifest["shards"]),
        "shard_bytes_written_by_workers": round(worker_share, 3),
        "ratio_vs_open_once": round(ours / base, 2), "ratio_vs_open_per_read": round(ours / naive, 2),
        "baseline_s": [round(x, 2) for x in base_times], "baseline_open_per_read_s": [round(x, 2) for x in naive_times],
        "ingest_s": [round(x, 2) for x in ingest_times],
    }
    print(json.dumps(result, indent=1))
    print(f"ofa ingest {ours:.1f} chips/s; baseline (assets opened once per item) {base:.1f} chips/s: {ours / base:.2f}x; "
          f"naive baseline (asset opened per band read) {naive:.1f} chips/s: {ours / naive:.2f}x")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
