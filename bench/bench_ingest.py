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
``s3://``, so every chip read is an HTTP range request as with a real cloud catalog. It then runs
``ofa ingest`` once more, in a fresh process whose S3 traffic goes through a metering proxy
(``tests/support/faultproxy.py``), and sets the GET requests and bytes received against the minimum
for the same chips (``tests/support/transfer.py``: the bytes of the tiles the chip windows touch plus
one header read per asset, and the tile rows touched). The last line reads
``bytes 1.12x minimum (...), requests 1.60x tile rows (...)``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # support.*: test tools the benches share


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


def metered_ingest(s3, catalog: str, collections: list[str], out: Path, args: argparse.Namespace) -> dict:
    """Run ``ofa ingest`` once in a fresh process (no cache from earlier reads) with its S3 traffic going
    through a metering proxy; return the proxy's count (``FaultProxy.traffic``)."""
    from support.faultproxy import FaultProxy

    shutil.rmtree(out, ignore_errors=True)
    with FaultProxy(s3.port, meter=True) as proxy:
        env = {**os.environ, **s3.gdal_env, "AWS_S3_ENDPOINT": f"127.0.0.1:{proxy.port}",
               "AWS_ENDPOINT_URL": proxy.url, "AWS_ENDPOINT_URL_S3": proxy.url}
        cmd = [sys.executable, "-m", "ofa.pipeline.cli", "ingest", "--catalog", catalog, "--out", str(out),
               "--chip-size", str(args.chip_size), "--workers", str(args.workers), "--no-progress"]
        cmd += [a for c in collections for a in ("--collection", c)] + (["--processes"] if args.processes else [])
        subprocess.run(cmd, env=env, check=True)
        traffic = proxy.traffic()
    shutil.rmtree(out, ignore_errors=True)
    return traffic


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The ``ofa ingest`` run options both ingest benchmarks time it with."""
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--processes", action="store_true", help="Dask worker processes instead of threads")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each; the best is reported")


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's threads and of its children that have ended (Dask
    worker processes once the cluster closes; the S3 and STAC servers run on and are not counted)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def encode_write_cpu(dataset: Path, work: Path, repeat: int) -> tuple[int, float]:
    """(samples, least CPU seconds of ``repeat`` rounds) to encode and write again the samples of a finished
    dataset as ingest does (``encode_npy`` of a strided chip view, CRC-32, meta JSON, tar block,
    ``ShardWriter`` with sha256)."""
    import io
    import tarfile

    import fsspec
    import numpy as np

    from ofa.ingest.chips import encode_json, encode_npy
    from ofa.ingest.dataset.contract import pixels_checksum
    from ofa.ingest.dataset.shard_writer import ShardWriter, sample_block

    samples = []
    for path in sorted(dataset.rglob("*.tar")):
        with tarfile.open(path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if name.endswith(".pixels.npy"):
                key = name[:-len(".pixels.npy")]
                pixels = np.load(io.BytesIO(data))
                run = np.concatenate([pixels, pixels], axis=2)     # the chipper encodes a view of a run of chips
                samples.append((key, run[:, :, :pixels.shape[2]], json.loads(members[f"{key}.meta.json"])))
    out, best = work / "encode-write", float("inf")
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        t = cpu_seconds()
        writer = ShardWriter(fsspec.filesystem("file"), str(out), "bench")
        for key, view, meta in samples:
            npy = encode_npy(view)
            meta["pixels_crc32"] = pixels_checksum(npy)
            writer.add_block(sample_block(key, npy, encode_json(meta)))
        writer.flush()
        best = min(best, cpu_seconds() - t)
    shutil.rmtree(out, ignore_errors=True)
    return len(samples), best


def _timed_runs(items: list[dict], url: str, work: Path, args: argparse.Namespace) -> dict:
    """``--repeat`` rounds of the two baselines and ``ofa ingest``: wall and CPU seconds of each."""
    from ofa.infra.demo_catalog import DEMO_COLLECTIONS
    from ofa.ingest.job import IngestConfig, run_ingest

    runs: dict = {k: {"wall": [], "cpu": []} for k in ("once", "per_read", "ingest")}

    def timed(kind: str, fn):
        t, c = time.monotonic(), cpu_seconds()
        value = fn()
        runs[kind]["wall"].append(time.monotonic() - t)
        runs[kind]["cpu"].append(cpu_seconds() - c)
        return value

    for i in range(args.repeat):
        runs["chips"] = timed("once", lambda: baseline(items, args.chip_size))
        timed("per_read", lambda: baseline(items, args.chip_size, reopen=True))
        out = work / f"dataset-{i}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = IngestConfig(catalog=url, collections=list(DEMO_COLLECTIONS), out=str(out), chip_size=args.chip_size,
                           workers=args.workers, processes=args.processes, progress=False)
        runs["manifest"] = timed("ingest", lambda: run_ingest(cfg))
        runs["dataset"] = out
        counts = runs["manifest"]["counts"]
        processed = counts["kept"] + sum(counts["dropped"].values())
        assert processed == runs["chips"], (processed, runs["chips"])
    return runs


def _report(runs: dict, args: argparse.Namespace, encode: tuple[int, float], traffic: dict | None, minimum) -> dict:
    """The result record: chips/s of each contender, CPU seconds per chip, and the traffic against the minimum."""
    chips, manifest = runs["chips"], runs["manifest"]
    rate = {k: chips / min(runs[k]["wall"]) for k in ("once", "per_read", "ingest")}
    cpu = {k: min(runs[k]["cpu"]) / chips for k in ("once", "per_read", "ingest")}
    encode_per_chip = encode[1] / chips     # the kept samples' encoding and writing, spread over every chip
    worker_bytes = sum(s["bytes"] for s in manifest["shards"] if "/items/" in s["path"])
    result = {
        "chips": chips, "kept": manifest["counts"]["kept"], "dropped": manifest["counts"]["dropped"],
        "chip_size": args.chip_size, "workers": args.workers, "processes": args.processes, "remote": args.remote,
        "baseline_open_once_chips_per_s": round(rate["once"], 1), "baseline_open_per_read_chips_per_s": round(rate["per_read"], 1),
        "ingest_chips_per_s": round(rate["ingest"], 1), "shards": len(manifest["shards"]),
        "shard_bytes_written_by_workers": round(worker_bytes / max(1, sum(s["bytes"] for s in manifest["shards"])), 3),
        "ratio_vs_open_once": round(rate["ingest"] / rate["once"], 2), "ratio_vs_open_per_read": round(rate["ingest"] / rate["per_read"], 2),
        "cpu_ms_per_chip": {"ingest": round(1e3 * cpu["ingest"], 3), "open_once": round(1e3 * cpu["once"], 3),
                            "open_per_read": round(1e3 * cpu["per_read"], 3), "encode_write": round(1e3 * encode_per_chip, 3)},
        "cpu_goal_ms_per_chip": round(1e3 * (1.2 * cpu["once"] + encode_per_chip), 3),
        "baseline_s": [round(x, 2) for x in runs["once"]["wall"]], "baseline_open_per_read_s": [round(x, 2) for x in runs["per_read"]["wall"]],
        "ingest_s": [round(x, 2) for x in runs["ingest"]["wall"]],
    }
    if traffic is not None:
        result["traffic"] = traffic
        result["minimum"] = minimum.to_dict()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="finest-grid pixels per scene side (default: %(default)s)")
    add_run_options(parser)
    parser.add_argument("--remote", action="store_true", help="serve the COGs from the local S3 server (HTTP range reads)")
    parser.add_argument("--keep", help="folder for the catalog (reused between runs) instead of a temporary one")
    args = parser.parse_args(argv)

    import contextlib

    from ofa.infra.demo_catalog import DEMO_COLLECTIONS, write_demo_catalog
    from ofa.infra.localstack import s3_server, stac_server
    from support.transfer import cog_minimum, ratio_line

    work = Path(args.keep or tempfile.mkdtemp(prefix="ofa-bench-ingest-"))
    t = time.monotonic()
    collections, local_items = write_demo_catalog(work / f"catalog-{args.size}", _scenes(args.size))
    print(f"catalog: {len(local_items)} items, scenes up to {args.size * 2} px ({time.monotonic() - t:.1f} s to write)")
    traffic, minimum, items = None, None, local_items
    with contextlib.ExitStack() as stack:
        if args.remote:
            s3 = stack.enter_context(s3_server())
            root = work / f"catalog-{args.size}"
            items = hrefs_under(local_items, root, upload_tree(root, s3, "ofa-bench-cogs", "cogs"))
            print(f"COGs on {s3.endpoint_url} (s3://ofa-bench-cogs)")
        baseline(items, args.chip_size)  # warm the caches for both contenders
        url = stack.enter_context(stac_server(collections, items))
        runs = _timed_runs(items, url, work, args)
        if args.remote:
            traffic = metered_ingest(s3, url, list(DEMO_COLLECTIONS), work / "dataset-metered", args)
            minimum = cog_minimum(local_items, args.chip_size)
    result = _report(runs, args, encode_write_cpu(runs["dataset"], work, args.repeat), traffic, minimum)
    print(json.dumps(result, indent=1))
    cpu = result["cpu_ms_per_chip"]
    print(f"ofa ingest {result['ingest_chips_per_s']:.1f} chips/s; baseline (assets opened once per item) "
          f"{result['baseline_open_once_chips_per_s']:.1f} chips/s: {result['ratio_vs_open_once']:.2f}x; naive baseline "
          f"(asset opened per band read) {result['baseline_open_per_read_chips_per_s']:.1f} chips/s: {result['ratio_vs_open_per_read']:.2f}x")
    print(f"CPU per chip: ofa ingest {cpu['ingest']:.2f} ms, read-only loop {cpu['open_once']:.2f} ms, encoding + writing "
          f"{cpu['encode_write']:.2f} ms: {cpu['ingest'] / max(1e-9, result['cpu_goal_ms_per_chip']):.2f}x the goal "
          f"(1.2 x loop + encoding and writing = {result['cpu_goal_ms_per_chip']:.2f} ms)")
    if traffic is not None:
        print(ratio_line(traffic, minimum))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
