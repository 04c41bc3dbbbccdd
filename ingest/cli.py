"""``ofa ingest`` (STAC -> chips -> WebDataset shards + manifest) and ``ofa manifest verify|show``: what they run.
Their options are the fields of ``IngestConfig``, ``RebuildOptions`` and ``ManifestOptions`` (``ingest.config``);
the ``ofa`` command parses them and calls these functions with the values."""
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

#: option pairs that exclude each other
EXCLUSIVE = (("bbox", "intersects"), ("workers", "scheduler"))


def _setup_logging() -> None:
    logger = logging.getLogger("ofa.ingest")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """``IngestConfig``'s fields from ``args``; two options that exclude each other raise ``ValueError``."""
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(IngestConfig) if hasattr(args, f.name)}
    for a, b in EXCLUSIVE:
        if options.get(a) is not None and options.get(b) is not None:
            raise ValueError(f"--{a} and --{b} exclude each other: give one")
    return options


def ingest_command(args: argparse.Namespace) -> int:
    """``ofa ingest``: a search (or ``--from-manifest``) -> ``run_ingest``."""
    _setup_logging()
    from ofa.ingest.job import config_from_manifest, run_ingest
    from ofa.ingest.dataset.manifest import read_manifest
    from ofa.ingest.storage import StorageError, is_storage_error, storage_access

    options = _options(args)
    try:
        if args.from_manifest:
            if options.get("out") is None and not options.get("plan"):
                raise ValueError("--from-manifest needs --out")
            with storage_access(args.from_manifest, "--from-manifest"):
                manifest = read_manifest(args.from_manifest, options.get("storage_options"))
            overrides = {k: options[k] for k in ("storage_options", "workers", "scheduler", "strict", "progress", "processes",
                                                  "sign_href", "plan", "json")}
            cfg = config_from_manifest(manifest, options.get("out") or "", given=options, **overrides)
        else:
            if options.get("plan") and options.get("out") is None:
                options["out"] = ""   # a plan writes nothing
            missing = [f"--{k}" for k in ("catalog", "out") if options.get(k) is None]
            if not options.get("collections"):
                missing.append("--collection")
            if missing:
                raise ValueError(f"missing {', '.join(missing)} (or give them in --config)")
            cfg = IngestConfig(**options)
        if cfg.plan:
            return _print_plan(cfg)
        run_ingest(cfg)
    except Exception as exc:  # noqa: BLE001 - storage gave up after its retries: one line naming --out
        if isinstance(exc, StorageError) or not is_storage_error(exc):
            raise  # the ofa command maps ingest, manifest and search errors to one line and an exit code
        raise StorageError(str(options.get("out")), exc, "--out", "rerun the same command to resume") from exc
    return 0


def _print_plan(cfg: IngestConfig) -> int:
    from ofa.ingest.plan_report import format_plan, plan_run

    report = plan_run(cfg)
    print(json.dumps(report, indent=1) if cfg.json else format_plan(report))
    return 0


def verify_command(args: argparse.Namespace) -> int:
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


def show_command(args: argparse.Namespace) -> int:
    from ofa.ingest.dataset.manifest import read_manifest, summary
    from ofa.ingest.storage import storage_access

    with storage_access(args.url):  # a bad manifest (ManifestError) or storage: one line from the ofa command
        manifest = read_manifest(args.url, args.storage_options)
        if args.map:
            from ofa.ingest.dataset.manifest import dataset_url
            from ofa.ingest.sample_map import read_index, render_map

            table = read_index(dataset_url(args.url), manifest, args.storage_options)
            Path(args.map).write_bytes(render_map(table, f"{dataset_url(args.url)}: {table.num_rows} samples"))
    print(json.dumps(manifest, indent=1) if args.json else summary(manifest))
    if args.map:
        print(f"map: {args.map}", file=sys.stderr)
    return 0


def stac_command(args: argparse.Namespace) -> int:
    """``ofa manifest stac``: a dataset's index.parquet and stac/collection.json, as ``ofa ingest`` writes them."""
    from ofa.ingest.dataset_stac import write_dataset_stac
    from ofa.ingest.dataset.manifest import dataset_url, read_manifest
    from ofa.ingest.storage import storage_access

    _setup_logging()
    with storage_access(args.url):
        manifest = read_manifest(args.url, args.storage_options)
        written = write_dataset_stac(dataset_url(args.url), manifest, args.storage_options)
    for kind, url in written.items():
        print(f"{kind}: {url}")
    return 0
