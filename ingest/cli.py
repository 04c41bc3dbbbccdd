"""``ofa ingest`` (STAC -> chips -> WebDataset shards + manifest) and ``ofa manifest verify|show``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

# only light modules at the top: `ofa --help` imports this one; the run functions import the ingest stack
from ofa.ingest.config import IngestConfig
from ofa.ingest.dataset.contract import ManifestError
from ofa.ingest.options import Flag, add_options, json_object

INGEST_DESCRIPTION = """Search a STAC API, cut each item into chips on its finest band's grid, drop chips by no data,
cloud (S2 SCL, Landsat QA_PIXEL) and SAR border zeros, and write WebDataset tar shards plus a
manifest.json (search, items, chip parameters, shard sha256s, per-band statistics, skipped items)
to a folder, file:// or s3:// URL. Runs on Dask distributed; a killed run resumes where it stopped
and the same inputs give byte-identical shards."""

INGEST_EXAMPLES = """examples:
  ofa ingest --catalog https://earth-search.aws.element84.com/v1 --collection sentinel-2-l2a \\
      --bbox 11.0,46.0,11.2,46.2 --datetime 2024-06-01/2024-06-30 --max-cloud 20 --out s3://bucket/ds
  ofa ingest --config ingest.yaml                 # same keys as the options (chip_size or chip-size)
  ofa ingest --from-manifest s3://bucket/ds/manifest.json --out ./rebuilt
"""

#: option keys a --config YAML may hold (dashes or underscores): IngestConfig's fields, "collection" too
CONFIG_KEYS = ("collection", *(f.name for f in dataclasses.fields(IngestConfig) if f.name not in ("progress", "ids")))


def _bbox(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bbox {text!r}: expected four numbers W,S,E,N") from None
    if len(values) != 4 or values[0] > values[2] or values[1] > values[3]:
        raise argparse.ArgumentTypeError(f"--bbox {text!r}: expected W,S,E,N with W <= E and S <= N")
    return values


def _csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _load_config(path: str) -> dict[str, Any]:
    from ofa.ingest.options import load_yaml_options

    try:
        return load_yaml_options(path, CONFIG_KEYS)
    except ValueError as exc:
        raise SystemExit(f"ofa ingest: error: --config {exc}")
    except OSError as exc:
        raise SystemExit(f"ofa ingest: error: --config {path}: {exc}")


def _setup_logging() -> None:
    logger = logging.getLogger("ofa.ingest")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _ingest(args: argparse.Namespace) -> int:
    _setup_logging()
    from ofa.ingest.dataset.manifest import read_manifest
    from ofa.ingest.job import config_from_manifest, run_ingest

    cli = {k: v for k, v in vars(args).items() if v is not None and k in CONFIG_KEYS}
    options: dict[str, Any] = _load_config(args.config) if args.config else {}
    options.update(cli)
    if "collection" in options:
        options["collections"] = list(options.pop("collection"))
    if isinstance(options.get("bbox"), str):
        options["bbox"] = _bbox(options["bbox"])
    if isinstance(options.get("bands"), str):
        options["bands"] = _csv(options["bands"])
    if isinstance(options.get("collections"), str):
        options["collections"] = [options["collections"]]
    if isinstance(options.get("intersects"), str):
        try:
            options["intersects"] = json.loads(Path(options["intersects"]).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"ofa ingest: error: --intersects {options['intersects']}: {exc}", file=sys.stderr)
            return 2
    if options.get("intersects", {}).get("type") == "Feature" if isinstance(options.get("intersects"), dict) else False:
        options["intersects"] = options["intersects"]["geometry"]
    options["progress"] = not args.no_progress
    from ofa.ingest.storage import StorageError, is_storage_error, storage_access

    try:
        if args.from_manifest:
            if "out" not in options:
                print("ofa ingest: error: --from-manifest needs --out", file=sys.stderr)
                return 2
            with storage_access(args.from_manifest, "--from-manifest"):
                manifest = read_manifest(args.from_manifest, options.get("storage_options"))
            overrides = {k: options[k] for k in ("storage_options", "workers", "scheduler", "strict", "progress", "processes",
                                                  "sign_href") if k in options}
            cfg = config_from_manifest(manifest, options["out"], **overrides)
        else:
            missing = [f"--{k}" for k in ("catalog", "out") if k not in options]
            if not options.get("collections"):
                missing.append("--collection")
            if missing:
                print(f"ofa ingest: error: missing {', '.join(missing)} (or give them in --config)", file=sys.stderr)
                return 2
            cfg = IngestConfig(**options)
        run_ingest(cfg)
    except Exception as exc:  # noqa: BLE001 - storage gave up after its retries: one line naming --out
        if isinstance(exc, StorageError) or not is_storage_error(exc):
            raise  # the ofa command maps ingest, manifest and search errors to one line and an exit code
        raise StorageError(str(options.get("out")), exc, "--out", "rerun the same command to resume") from exc
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ofa.ingest.dataset.manifest import read_manifest, verify_shards
    from ofa.ingest.storage import storage_access

    with storage_access(args.url):
        try:
            manifest = read_manifest(args.url, args.storage_options)
        except ManifestError as exc:
            print(f"FAIL {exc}")
            return 1
        problems = verify_shards(args.url, manifest, args.storage_options)
        for problem in problems:
            print(f"FAIL {problem}")
        if problems:
            return 1
        n = sum(s["count"] for s in manifest["shards"])
    print(f"OK {len(manifest['shards'])} shards, {n} samples: every shard present with its sha256 and sample count")
    return 0


def _show(args: argparse.Namespace) -> int:
    from ofa.ingest.dataset.manifest import read_manifest, summary
    from ofa.ingest.storage import storage_access

    with storage_access(args.url):  # a bad manifest (ManifestError) or storage: one line from the ofa command
        manifest = read_manifest(args.url, args.storage_options)
    print(json.dumps(manifest, indent=1) if args.json else summary(manifest))
    return 0


#: the chip filters: IngestConfig field -> what a chip may hold at most, as a fraction of its pixels
CHIP_FILTERS = {"max_nodata_fraction": "no-data pixels", "max_cloud_fraction": "cloud pixels",
                "max_sar_border_fraction": "SAR border zeros"}

#: the command-line face of ``IngestConfig`` (defaults live on its fields and ``ChipOptions``)
INGEST_FLAGS = {
    "catalog": Flag("STAC API URL", metavar="URL"),
    "collections": Flag("STAC collection id (repeat for several)", flag="--collection", action="append", metavar="ID"),
    "bbox": Flag("W,S,E,N in WGS84 degrees", type=_bbox, metavar="W,S,E,N"),
    "intersects": Flag("GeoJSON file (geometry or Feature) to intersect", metavar="GEOJSON_FILE"),
    "datetime": Flag("START/END (RFC 3339, open ends with ..)", metavar="START/END"),
    "max_cloud": Flag("keep items with eo:cloud_cover <= PCT (applied client-side)", metavar="PCT"),
    "max_items": Flag("at most N items", metavar="N"),
    "chip_size": Flag("chip size in pixels of the finest band", metavar="PX"),
    "bands": Flag("comma-separated band names to read (default: all of each sensor); the others stay in every "
                  "sample, zero-filled and false in band_valid", type=_csv, metavar="NAMES"),
    "out": Flag("dataset URL: a folder, file:// or s3://", metavar="URL"),
    "workers": Flag("workers of the local Dask cluster", metavar="N", default_text="one per core"),
    "scheduler": Flag("join an existing Dask cluster, e.g. tcp://HOST:8786", metavar="tcp://HOST:PORT"),
    "processes": Flag("local cluster with worker processes instead of threads"),
    "storage_options": Flag("fsspec options as JSON, e.g. '{\"client_kwargs\": {\"endpoint_url\": ...}}'",
                            type=json_object, metavar="JSON"),
    **{name: Flag(f"drop chips with a larger fraction of {what}", metavar="F") for name, what in CHIP_FILTERS.items()},
    "shard_max_samples": Flag("samples per shard at most", metavar="N"),
    "shard_max_bytes": Flag("bytes per shard at most", metavar="BYTES"),
    "sign_href": Flag("module:function that signs an href before it is opened (e.g. planetary_computer:sign); "
                      "signed URLs are never recorded", type=str, metavar="MODULE:FUNCTION"),
    "strict": Flag("fail when any item is skipped"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ofa ingest`` and ``ofa manifest verify|show``."""
    p = subparsers.add_parser(
        "ingest", help="STAC search -> cloud-filtered chips -> WebDataset shards + manifest",
        description=INGEST_DESCRIPTION, epilog=INGEST_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(p, IngestConfig, INGEST_FLAGS, suppress=True, exclusive=[("bbox", "intersects"), ("workers", "scheduler")])
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file with the same keys as these options")
    p.add_argument("--from-manifest", metavar="URL/manifest.json", help="rebuild the dataset described by this manifest.json into --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or summary")
    p.set_defaults(func=_ingest)

    m = subparsers.add_parser("manifest", help="verify or show a dataset's manifest",
                              description="Check or summarise a dataset's manifest.json.")
    msub = m.add_subparsers(dest="manifest_command", metavar="ACTION")
    for name, fn, text in (("verify", _verify, "exit 0 only if every shard exists with its recorded sha256 and sample count"),
                           ("show", _show, "print a summary of the manifest")):
        q = msub.add_parser(name, help=text, description=text)
        q.add_argument("url", help="dataset URL or its manifest.json (folder, file://, s3://)")
        q.add_argument("--storage-options", type=json_object, help="fsspec options as JSON")
        if name == "show":
            q.add_argument("--json", action="store_true", help="print the manifest itself")
        q.set_defaults(func=fn)
    m.set_defaults(func=lambda args: (m.print_help(), 2)[1])
