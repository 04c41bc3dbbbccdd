"""``ofa ingest`` (STAC -> chips -> WebDataset shards + manifest) and ``ofa manifest verify|show``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

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

#: option keys a --config YAML may hold (dashes or underscores)
CONFIG_KEYS = (
    "catalog", "collection", "collections", "bbox", "intersects", "datetime", "max_cloud", "max_items", "chip_size",
    "bands", "out", "workers", "scheduler", "storage_options", "strict", "max_nodata_fraction", "max_cloud_fraction",
    "max_sar_border_fraction", "shard_max_samples", "shard_max_bytes", "processes", "sign_href",
)


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


def _json_arg(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--storage-options: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--storage-options: expected a JSON object")
    return value


def _load_config(path: str) -> dict[str, Any]:
    from ingest.options import load_yaml_options

    try:
        return load_yaml_options(path, CONFIG_KEYS)
    except ValueError as exc:
        raise SystemExit(f"ofa ingest: error: --config {exc}")
    except OSError as exc:
        raise SystemExit(f"ofa ingest: error: --config {path}: {exc}")


def _setup_logging() -> None:
    import logging

    logger = logging.getLogger("ofa.ingest")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _ingest(args: argparse.Namespace) -> int:
    _setup_logging()
    from ingest.job import IngestConfig, config_from_manifest, run_ingest
    from ingest.manifest import read_manifest

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
    from ingest.storage import StorageError, is_storage_error, storage_access

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
    from ingest.manifest import read_manifest, verify_dataset
    from ingest.storage import storage_access

    with storage_access(args.url):
        ok, problems = verify_dataset(args.url, args.storage_options)
        for problem in problems:
            print(f"FAIL {problem}")
        if not ok:
            return 1
        manifest = read_manifest(args.url, args.storage_options)
        n = sum(s["count"] for s in manifest["shards"])
    print(f"OK {len(manifest['shards'])} shards, {n} samples: every shard present with its sha256 and sample count")
    return 0


def _show(args: argparse.Namespace) -> int:
    from ingest.manifest import read_manifest, summary
    from ingest.storage import storage_access

    with storage_access(args.url):  # a bad manifest (ManifestError) or storage: one line from the ofa command
        manifest = read_manifest(args.url, args.storage_options)
    print(json.dumps(manifest, indent=1) if args.json else summary(manifest))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ofa ingest`` and ``ofa manifest verify|show``."""
    p = subparsers.add_parser(
        "ingest", help="STAC search -> cloud-filtered chips -> WebDataset shards + manifest",
        description=INGEST_DESCRIPTION, epilog=INGEST_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--catalog", metavar="URL", help="STAC API URL")
    p.add_argument("--collection", action="append", metavar="ID", help="STAC collection id (repeat for several)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--bbox", type=_bbox, metavar="W,S,E,N", help="W,S,E,N in WGS84 degrees")
    where.add_argument("--intersects", metavar="GEOJSON_FILE", help="GeoJSON file (geometry or Feature) to intersect")
    p.add_argument("--datetime", metavar="START/END", help="START/END (RFC 3339, open ends with ..)")
    p.add_argument("--max-cloud", type=float, metavar="PCT", help="keep items with eo:cloud_cover <= PCT (applied client-side)")
    p.add_argument("--max-items", type=int, metavar="N", help="at most N items")
    p.add_argument("--chip-size", type=int, metavar="PX", help="chip size in pixels of the finest band (default 256)")
    p.add_argument("--bands", metavar="NAMES", help="comma-separated band names to read (default: all of each sensor); "
                   "the others stay in every sample, zero-filled and false in band_valid")
    p.add_argument("--out", metavar="URL", help="dataset URL: a folder, file:// or s3://")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--workers", type=int, metavar="N", help="workers of the local Dask cluster (default: one per core)")
    run.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="join an existing Dask cluster, e.g. tcp://HOST:8786")
    p.add_argument("--processes", action="store_true", default=None, help="local cluster with worker processes instead of threads")
    p.add_argument("--storage-options", type=_json_arg, metavar="JSON", help="fsspec options as JSON, e.g. '{\"client_kwargs\": {\"endpoint_url\": ...}}'")
    p.add_argument("--max-nodata-fraction", type=float, metavar="F", help="drop chips with more no-data pixels (default 0.1)")
    p.add_argument("--max-cloud-fraction", type=float, metavar="F", help="drop chips with more cloud pixels (default 0.2)")
    p.add_argument("--max-sar-border-fraction", type=float, metavar="F", help="drop SAR chips with more border zeros (default 0.1)")
    p.add_argument("--shard-max-samples", type=int, metavar="N", help="samples per shard at most (default 1000)")
    p.add_argument("--shard-max-bytes", type=int, metavar="BYTES", help="bytes per shard at most (default 256 MiB)")
    p.add_argument("--sign-href", metavar="MODULE:FUNCTION", help="module:function that signs an href before it is opened (e.g. planetary_computer:sign); "
                                       "signed URLs are never recorded")
    p.add_argument("--strict", action="store_true", default=None, help="fail when any item is skipped")
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
        q.add_argument("--storage-options", type=_json_arg, help="fsspec options as JSON")
        if name == "show":
            q.add_argument("--json", action="store_true", help="print the manifest itself")
        q.set_defaults(func=fn)
    m.set_defaults(func=lambda args: (m.print_help(), 2)[1])
