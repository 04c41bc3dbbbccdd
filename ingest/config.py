"""What an ingest run is asked to do: ``IngestConfig`` (the ``ofa ingest`` options and ``--config`` keys)
and the chip parameters it hands the item tasks (``ChipOptions``), each default written once here; the
options of ``ofa ingest --from-manifest`` and ``ofa manifest verify|show``. Light to import: the ``ofa``
command builds its options from these fields at start-up (``ofa.pipeline.options``)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ofa.ingest.hrefs import HrefPolicy, policy_for
from ofa.ingest.limits import ReadLimits
from ofa.ingest.search import SearchParams
from ofa.ingest.dataset.shard_writer import SHARD_MAX_BYTES, SHARD_MAX_SAMPLES


@dataclass(frozen=True)
class ChipOptions:
    """Chip grid and filter thresholds (fractions of the chip's pixels)."""

    chip_size: int = 256
    max_nodata: float = 0.1
    max_cloud: float = 0.2
    max_sar_border: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return {"chip_size": self.chip_size, "max_nodata_fraction": self.max_nodata,
                "max_cloud_fraction": self.max_cloud, "max_sar_border_fraction": self.max_sar_border}


INGEST_DESCRIPTION = """Search a STAC API (or a static catalog on disk), cut each item into chips on its finest band's grid, drop chips by no data,
cloud (S2 SCL, Landsat QA_PIXEL) and SAR border zeros, and write WebDataset tar shards plus a
manifest.json (search, items, chip parameters, shard sha256s, per-band statistics, skipped items)
to a folder, file:// or s3:// URL. Runs on Dask distributed; a killed run resumes where it stopped
and the same inputs give byte-identical shards. The catalog does not choose what is read: /vsi...
paths and cloud metadata addresses are refused, local paths too unless the catalog is on disk or
--allow-local-hrefs is given, and sizes are bounded (--max-*)."""

INGEST_EXAMPLES = """examples:
  ofa ingest --catalog https://earth-search.aws.element84.com/v1 --collection sentinel-2-l2a \\
      --bbox 11.0,46.0,11.2,46.2 --datetime 2024-06-01/2024-06-30 --max-cloud 20 --out s3://bucket/ds
  ofa ingest --config ingest.yaml                 # same keys as the options (chip_size or chip-size)
  ofa ingest --from-manifest s3://bucket/ds/manifest.json --out ./rebuilt
"""


def str_list(value: Any) -> list[str]:
    """Names given as a YAML/JSON list or comma-separated (``B04,B08``); an option type."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = json.loads(text)
        else:
            return [v.strip() for v in text.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected names, comma-separated or a list, got {value!r}")
    return [str(v) for v in value]


def bbox(value: Any) -> list[float]:
    """W,S,E,N in WGS84 degrees, as ``"W,S,E,N"`` or a list of four numbers; an option type."""
    try:
        values = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        raise ValueError(f"--bbox {value!r}: expected four numbers W,S,E,N") from None
    if len(values) != 4 or values[0] > values[2] or values[1] > values[3]:
        raise ValueError(f"--bbox {value!r}: expected W,S,E,N with W <= E and S <= N")
    return values


def geometry(value: Any) -> dict:
    """A GeoJSON geometry: inline (a mapping) or a GeoJSON file's path; a Feature gives its geometry; an option type."""
    if isinstance(value, str):
        try:
            value = json.loads(Path(value).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"--intersects {value}: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--intersects: expected a GeoJSON geometry or Feature, got {type(value).__name__}")
    return value["geometry"] if value.get("type") == "Feature" else value


@dataclass
class IngestConfig:
    """Everything an ingest run needs. The documented fields are the ``ofa ingest`` options (flags, ``--config`` keys,
    ``OFA_INGEST__*`` variables; ``ofa.pipeline.options``)."""

    catalog: str
    """STAC API URL, or a static catalog on disk (a catalog.json, collection.json or item file, or its folder)"""
    collections: list[str] = field(metadata={"flag": "--collection", "repeat": True, "type": str_list, "metavar": "ID"})
    """STAC collection id (repeat for several; the YAML key is collection or collections)"""
    out: str
    """dataset URL: a folder, file:// or s3://"""
    bbox: list[float] | None = field(default=None, metadata={"type": bbox, "metavar": "W,S,E,N"})
    """W,S,E,N in WGS84 degrees (or --intersects)"""
    intersects: dict | None = field(default=None, metadata={"type": geometry, "metavar": "GEOJSON_FILE"})
    """GeoJSON file (geometry or Feature) to intersect; in YAML also the geometry itself (or --bbox)"""
    datetime: str | None = None
    """START/END (RFC 3339, open ends with ..)"""
    max_cloud: float | None = None          # percent, item-level eo:cloud_cover (client-side)
    """keep items with eo:cloud_cover <= PCT (applied client-side)"""
    max_items: int | None = None
    """at most N items"""
    chip_size: int = ChipOptions.chip_size
    """chip size in pixels of the finest band"""
    bands: list[str] | None = field(default=None, metadata={"type": str_list, "metavar": "NAMES"})
    """comma-separated band names to read (default: all of each sensor); the others stay in every sample,
    zero-filled and false in band_valid"""
    storage_options: dict | None = None
    """fsspec options as JSON, e.g. '{"client_kwargs": {"endpoint_url": ...}}'"""
    workers: int | None = None
    """workers of the local Dask cluster (null: one per core; or --scheduler)"""
    scheduler: str | None = None
    """join an existing Dask cluster, e.g. tcp://HOST:8786 (or --workers)"""
    strict: bool = False
    """fail when any item is skipped"""
    progress: bool = True
    """progress bars and summary"""
    max_nodata_fraction: float = ChipOptions.max_nodata    # chip-level thresholds
    """drop chips with a larger fraction of no-data pixels"""
    max_cloud_fraction: float = ChipOptions.max_cloud
    """drop chips with a larger fraction of cloud pixels"""
    max_sar_border_fraction: float = ChipOptions.max_sar_border
    """drop chips with a larger fraction of SAR border zeros"""
    shard_max_samples: int = SHARD_MAX_SAMPLES
    """samples per shard at most"""
    shard_max_bytes: int = SHARD_MAX_BYTES
    """bytes per shard at most"""
    processes: bool = False                 # local cluster: worker threads (False) or processes
    """local cluster with worker processes instead of threads"""
    ids: list[str] | None = None            # restrict the search to these items (--from-manifest)
    plan: bool = False
    """print what the run would do and stop, from the items and the asset headers (no pixel read): per item each
    band's asset, scale/offset/nodata and where each comes from, quantity and conversion, georeferencing, cloud mask,
    chip count; per collection chips and bytes to read/write"""
    json: bool = False
    """with --plan: print the plan as JSON"""
    #: href signing hook (e.g. Planetary Computer SAS tokens): a callable or "module:function";
    #: it gets the clean href and its result is only used to open the file, never recorded
    sign_href: Callable[[str], str] | str | None = field(default=None, repr=False,
                                                         metadata={"type": str | None, "metavar": "MODULE:FUNCTION"})
    """module:function that signs an href before it is opened (e.g. planetary_computer:sign); signed URLs are
    never recorded"""

    allow_local_hrefs: bool = False
    """read asset hrefs that are local paths or file:// URLs although the catalog is not on disk (a STAC API
    serving files of this machine, as the demo's loopback server does); a catalog on disk may always name
    files inside its own folder. /vsi... paths and metadata addresses stay refused"""
    allow_href_hosts: list[str] | None = field(default=None, metadata={"type": str_list, "metavar": "PATTERNS"})
    """read remote hrefs only from hosts (object stores: buckets) matching one of these comma-separated
    patterns, e.g. '*.amazonaws.com,sentinel-cogs'"""
    deny_href_hosts: list[str] | None = field(default=None, metadata={"type": str_list, "metavar": "PATTERNS"})
    """never read hrefs from hosts (object stores: buckets) matching one of these comma-separated patterns,
    e.g. '10.*,*.internal,my-private-bucket'"""
    max_raster_pixels: int = field(default=ReadLimits.max_raster_pixels, metadata={"metavar": "PX"})
    """refuse an item whose raster, geocoded grid or Zarr array declares more pixels (width x height)"""
    max_chunk_bytes: int = field(default=ReadLimits.max_chunk_bytes, metadata={"metavar": "BYTES"})
    """refuse an item with a TIFF tile/strip, Zarr chunk or SAR annotation larger than this decompressed
    (declared, or found while decompressing)"""
    max_stac_bytes: int = field(default=ReadLimits.max_stac_bytes, metadata={"metavar": "BYTES"})
    """fail the search on a STAC API response (a page of items) larger than this"""
    max_item_bytes: int = field(default=ReadLimits.max_item_bytes, metadata={"metavar": "BYTES"})
    """skip a STAC item whose JSON is larger than this"""
    max_json_depth: int = field(default=ReadLimits.max_json_depth, metadata={"metavar": "LEVELS"})
    """skip a STAC item whose JSON nests deeper than this"""

    def href_policy(self) -> HrefPolicy:
        """Which hrefs this run may open (``ingest.hrefs``)."""
        return policy_for(self.catalog, self.allow_local_hrefs, self.allow_href_hosts, self.deny_href_hosts)

    def read_limits(self) -> ReadLimits:
        """What one item may declare (``ingest.limits``)."""
        return ReadLimits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ReadLimits)})

    def reads_record(self) -> dict[str, Any]:
        """What the manifest records of what the run was allowed to read, for a rebuild to follow."""
        return {"hrefs": self.href_policy().to_dict(), "limits": self.read_limits().to_dict()}

    def search_params(self) -> SearchParams:
        return SearchParams(
            collections=tuple(self.collections), bbox=tuple(self.bbox) if self.bbox else None,
            intersects=self.intersects, datetime=self.datetime, max_cloud=self.max_cloud, max_items=self.max_items,
        )

    def chip_options(self) -> ChipOptions:
        return ChipOptions(self.chip_size, self.max_nodata_fraction, self.max_cloud_fraction, self.max_sar_border_fraction)

    def chips_record(self) -> dict[str, Any]:
        return {**self.chip_options().to_dict(), "bands": self.bands,
                "shard_max_samples": self.shard_max_samples, "shard_max_bytes": self.shard_max_bytes}


@dataclass
class RebuildOptions:
    """The same dataset again, from what its manifest recorded (ofa ingest --from-manifest)."""

    from_manifest: str | None = field(default=None, metadata={"metavar": "URL/manifest.json"})
    """rebuild the dataset described by this manifest.json into --out"""


@dataclass
class ManifestOptions:
    """Exit 0 only if every shard exists with its recorded sha256 and sample count."""

    url: str = field(metadata={"positional": True})
    """dataset URL or its manifest.json (folder, file://, s3://)"""
    storage_options: dict | None = None
    """fsspec options as JSON"""


@dataclass
class ManifestShowOptions(ManifestOptions):
    """Print a summary of the manifest."""

    json: bool = False
    """print the manifest itself"""
    map: str | None = field(default=None, metadata={"metavar": "PNG"})
    """also plot every sample's footprint on longitude/latitude, one colour per sensor, into this PNG"""


@dataclass
class ManifestStacOptions(ManifestOptions):
    """Write the dataset's index.parquet (GeoParquet sample index) and stac/collection.json (STAC Collection), as
    ofa ingest does, for a dataset written before they existed."""
