"""Benchmark: chips/s of ``ofa ingest`` from EOPF Zarr products against the same scenes as COGs, same run.

The scenes are the demo catalog's two Sentinel-2 L2A items with ``--size`` pixels on the 10 m grid
(COGs: deflate, 256 px tiles). Each is also written as an ESA EOPF product (``support.eopf_scene``:
Zarr v2 with consolidated metadata, blosc/zstd chunks, 6 x 6 chunks per array as the products cut
them; or ``--zarr-format 3``), and its item as the EOPF STAC API serves it (the whole product as one
asset, and assets at its arrays). Two STAC APIs on 127.0.0.1 serve the two catalogs; ``ofa ingest`` runs on each in turn,
``--repeat`` times, end to end (search, Dask cluster, reads, filters, encoding, shards, manifest), and
the best time of each is reported. Both runs must give the same samples (checked by shard sha256).

    python bench/bench_zarr.py --size 2048 --chip-size 256 --workers 2            # local files
    python bench/bench_zarr.py --size 2048 --chip-size 256 --workers 2 --remote   # both on local S3

``--remote`` uploads the COGs and the products to the local S3 server (moto, 127.0.0.1): every read
is an HTTP request, GDAL's for the COGs and s3fs's for the Zarr chunks. Each is then ingested once
more in a fresh process through a metering proxy (``bench_ingest.metered_ingest``), and its GET
requests and bytes are set against the minimum for the same chips (``tests/support/transfer.py``);
the last two lines read ``bytes 1.12x minimum (...), requests 1.60x tile rows (...)``, COGs then Zarr
(where each chunk is an object of its own: the requests per chunk are given too).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench_ingest import add_run_options, hrefs_under, metered_ingest, upload_tree


def _scenes(size: int):
    from ofa.infra.demo_catalog import DEMO_SCENES

    return tuple(dataclasses.replace(s, size=size // 128 * 128) for s in DEMO_SCENES if s.collection == "sentinel-2-l2a")


def _catalogs(work: Path, size: int, zarr_format: int, chunks_per_side: int) -> tuple[list[dict], list[dict], list[dict]]:
    """(collections, COG items, EOPF items) of the benchmark scenes, written under ``work``."""
    from ofa.infra.demo_catalog import write_demo_catalog
    from support.eopf_scene import eopf_item, write_eopf_product

    collections, cogs = write_demo_catalog(work / "cogs", _scenes(size))
    products = []
    for item in cogs:
        path = work / "zarr" / f"{item['id']}.zarr"
        write_eopf_product(item, str(path), zarr_format, chunks_per_side)
        products.append(eopf_item(item, str(path), "assets"))
    return collections, cogs, products


def _run(url: str, out: Path, args: argparse.Namespace) -> tuple[float, dict]:
    from ofa.ingest.job import IngestConfig, run_ingest

    shutil.rmtree(out, ignore_errors=True)
    t = time.monotonic()
    manifest = run_ingest(IngestConfig(catalog=url, allow_local_hrefs=True, collections=["sentinel-2-l2a"], out=str(out), chip_size=args.chip_size,
                                       workers=args.workers, processes=args.processes, progress=False))
    return time.monotonic() - t, manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="10 m grid pixels per scene side (default: %(default)s)")
    add_run_options(parser)
    parser.add_argument("--zarr-format", type=int, choices=(2, 3), default=2)
    parser.add_argument("--chunks-per-side", type=int, default=6,
                        help="chunks per array side (default: %(default)s, as EOPF cuts a 10980 px tile in 1830 px chunks)")
    parser.add_argument("--remote", action="store_true", help="serve COGs and products from the local S3 server")
    parser.add_argument("--keep", help="folder for the scenes instead of a temporary one")
    args = parser.parse_args(argv)

    from ofa.infra.localstack import s3_server, stac_server

    work = Path(args.keep or tempfile.mkdtemp(prefix="ofa-bench-zarr-"))
    t = time.monotonic()
    collections, cogs, products = _catalogs(work / "scenes", args.size, args.zarr_format, args.chunks_per_side)
    print(f"scenes: {len(cogs)} Sentinel-2 items, {args.size} px at 10 m, as COGs and EOPF Zarr v{args.zarr_format} "
          f"in {args.chunks_per_side}x{args.chunks_per_side} chunks ({time.monotonic() - t:.1f} s to write)")
    times: dict[str, list[float]] = {"cog": [], "zarr": []}
    manifests: dict[str, dict] = {}
    traffic: dict[str, dict] = {}
    local = {"cog": cogs, "zarr": products}
    with contextlib.ExitStack() as stack:
        if args.remote:
            s3 = stack.enter_context(s3_server())
            base = upload_tree(work / "scenes", s3, "ofa-bench-zarr")
            cogs, products = (hrefs_under(items, work / "scenes", base) for items in (cogs, products))
            print(f"COGs and products on {s3.endpoint_url} (s3://ofa-bench-zarr)")
        urls = {"cog": stack.enter_context(stac_server(collections, cogs)),
                "zarr": stack.enter_context(stac_server(collections, products))}
        for i in range(args.repeat):
            for kind in ("cog", "zarr"):   # alternated, so both see the same machine load
                seconds, manifests[kind] = _run(urls[kind], work / f"{kind}-{i}", args)
                times[kind].append(seconds)
        if args.remote:
            for kind in ("cog", "zarr"):
                traffic[kind] = metered_ingest(s3, urls[kind], ["sentinel-2-l2a"], work / f"{kind}-metered", args)
    same = [s["sha256"] for s in manifests["cog"]["shards"]] == [s["sha256"] for s in manifests["zarr"]["shards"]]
    counts = manifests["cog"]["counts"]
    chips = counts["kept"] + sum(counts["dropped"].values())
    cog, zarr = chips / min(times["cog"]), chips / min(times["zarr"])
    result = {"chips": chips, "kept": counts["kept"], "chip_size": args.chip_size, "size": args.size,
              "workers": args.workers, "processes": args.processes, "remote": args.remote, "zarr_format": args.zarr_format,
              "chunks_per_side": args.chunks_per_side,
              "cog_chips_per_s": round(cog, 1), "zarr_chips_per_s": round(zarr, 1), "zarr_over_cog": round(zarr / cog, 2),
              "same_shards": same, "cog_s": [round(x, 2) for x in times["cog"]], "zarr_s": [round(x, 2) for x in times["zarr"]]}
    lines = []
    if traffic:
        from support.transfer import cog_minimum, ratio_line, zarr_minimum

        minimum = {"cog": cog_minimum(local["cog"], args.chip_size), "zarr": zarr_minimum(local["zarr"], args.chip_size)}
        result["traffic"] = {k: {**traffic[k], "minimum": minimum[k].to_dict()} for k in traffic}
        lines = [f"{ratio_line(traffic[k], minimum[k], objects=k == 'zarr')}; {name}"
                 for k, name in (("cog", "COGs"), ("zarr", "EOPF Zarr"))]
    print(json.dumps(result, indent=1))
    print(f"ofa ingest from EOPF Zarr {zarr:.1f} chips/s, from COGs {cog:.1f} chips/s: {zarr / cog:.2f}x"
          f"{'' if same else ' (the shards differ!)'}")
    for line in lines:
        print(line)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
