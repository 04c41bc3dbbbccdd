"""The dataset contract between ``ingest`` (writer) and ``pipeline`` (reader).

Written down once here and versioned by ``FORMAT_VERSION``; the README repeats it for people.

A dataset is a folder (local path, ``file://`` or ``s3://``) holding::

    manifest.json                                    # see ``MANIFEST_KEYS``
    shards/{sensor}/items/{item key}-{index:04d}.tar # the shards one item's samples fill on their own
    shards/{sensor}/{sensor}-{index:06d}.tar         # what items leave over, packed in item order

All shards are WebDataset tar shards, one sensor per shard, bounded in samples and bytes; readers
take the list (and each shard's count, bytes and sha256) from the manifest, never from the names.

A shard is a plain POSIX tar with fixed headers (mtime 0, uid/gid 0, mode 0644, members in
sample order) so the same inputs give byte-identical shards. A sample is a key plus members:

- ``{key}.pixels.npy``: C x H x W array in the asset's native dtype, values untouched
  (no scaling, no resampling of values: lower-resolution bands are nearest-resampled onto the
  chip grid). C is always the sensor's channel count: a band the item lacks (single-polarisation
  Sentinel-1) or that ``--bands`` leaves out is zero-filled and false in ``band_valid``.
  Exception, Sentinel-1: GCP-only GRD files are geocoded (nearest neighbour through their GCPs onto
  a UTM grid) and, where the item links calibration annotations, calibrated; calibrated SAR pixels
  are float32 dB with nodata ``-9999`` (``ingest/sar.py``).
- ``{key}.meta.json``: see ``META_KEYS``.

Keys hold no dots (WebDataset splits key and extension at the first dot).
Statistics in the manifest are per sensor, quantity and band, over valid (non-nodata) pixels of
valid bands after applying each band's scale and offset, so readers normalise
``(x * scale + offset - mean) / std`` with the entry ``statistics_for`` picks for the sample's
``quantity``: samples of different quantities are never normalised with one entry. Invalid bands
(``band_valid`` false) are 0 after normalisation. Datasets written before ``quantity`` and
``band_valid`` existed have neither: one quantity per sensor, every band valid.
"""
from __future__ import annotations

import json
from typing import Any

try:  # ISA-L's CRC-32 (same polynomial and values as zlib's) runs ~15x faster than zlib 1.2/1.3's
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - platforms without an isal wheel
    from zlib import crc32

FORMAT_NAME = "ofa-webdataset"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
PIXELS_EXT = "pixels.npy"
META_EXT = "meta.json"

#: keys every sample's meta.json carries
META_KEYS = (
    "sensor",           # registry id, e.g. "sentinel-2"; also the model modality name
    "bands",            # band names in channel order, e.g. ["B01", "B02", ...]
    "wavelengths",      # centre wavelength per band, micrometres (SAR: DOFA convention 5.405)
    "gsd",              # metres per pixel of the chip grid
    "dtype",            # numpy dtype name of pixels.npy
    "nodata",           # per band, or null
    "scale",            # per band; physical = raw * scale + offset
    "offset",           # per band
    "crs",              # e.g. "EPSG:32633"
    "transform",        # affine of the chip: [a, b, c, d, e, f] (rasterio order)
    "bbox",             # WGS84 [west, south, east, north]
    "datetime",         # ISO 8601
    "item_id",
    "collection",
    "window",           # {"col_off", "row_off", "width", "height"} in the reference asset grid
    "cloud_fraction",   # 0..1, from the sensor's cloud mask; null = not measured (no mask, e.g. Sentinel-2 L1C)
    "nodata_fraction",  # 0..1
    "pixels_crc32",     # CRC-32 (8 hex digits) of this sample's pixels.npy member: readers catch bit flips per sample
    "quantity",         # what the pixels measure after scale/offset, e.g. "surface_reflectance", "sigma0_db" (null: unrecorded)
    "band_valid",       # per band: false where the channel is zero-filled (absent in the item or left out by --bands)
)

#: top-level keys of manifest.json
MANIFEST_KEYS = (
    "format",           # FORMAT_NAME
    "format_version",   # FORMAT_VERSION
    "created",          # ISO time; the only field allowed to differ between rebuilds
    "software",         # {"ofa": version, ...}
    "catalog",          # catalog URL (no credentials, no signed query strings)
    "search",           # collections, bbox/intersects, datetime, max_cloud, max_items, ...
    "items",            # [{"id", "collection", "updated", "etag"}] selected items, in order
    "chips",            # chip parameters: chip_size, bands, thresholds, ...
    "reads",            # what the run was allowed to read: {"hrefs": href policy, "limits": size limits}
    "shards",           # [{"path" (relative), "sensor", "count", "bytes", "sha256"}]
    "statistics",       # {statistics_key: {"bands", "quantity", "count", "mean", "std", "min", "max"}} (lists per band)
    "skipped",          # [{"item_id", "collection", "reason"}]
    "counts",           # {"kept": n, "dropped": {reason: n}}
)


class ManifestError(ValueError):
    """A manifest that cannot be read: bad JSON, wrong format or an unknown version."""


def check_manifest(manifest: Any, source: str = "manifest") -> dict:
    """Validate the envelope of a parsed manifest; return it or raise ``ManifestError``."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{source}: not a JSON object")
    if manifest.get("format") != FORMAT_NAME:
        raise ManifestError(f"{source}: format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    version = manifest.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise ManifestError(
            f"{source}: format_version {version!r} is not supported by this ofa "
            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade ofa or rebuild the dataset"
        )
    missing = [k for k in ("shards", "statistics") if k not in manifest]
    if missing:
        raise ManifestError(f"{source}: missing keys {missing}")
    for shard in manifest["shards"] if isinstance(manifest["shards"], list) else [None]:
        path = shard.get("path") if isinstance(shard, dict) else None
        if not isinstance(path, str) or path.startswith("/") or "://" in path or ".." in path.replace("\\", "/").split("/"):
            raise ManifestError(f"{source}: shard path {path!r} must be relative and stay inside the dataset")
    return manifest


def parse_manifest(text: str | bytes, source: str = "manifest") -> dict:
    """Parse and validate manifest JSON text."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{source}: not valid JSON ({exc})") from None
    return check_manifest(data, source)


def statistics_key(sensor: str, quantity: str | None, canonical: str | None) -> str:
    """Where the manifest keeps the statistics of ``sensor`` samples holding ``quantity``: under the sensor id
    for the sensor's canonical quantity (the registry's) or an unrecorded one, else under ``{sensor}/{quantity}``."""
    return sensor if quantity is None or quantity == canonical else f"{sensor}/{quantity}"


def statistics_for(statistics: dict, sensor: str, quantity: str | None) -> dict | None:
    """The manifest's statistics entry for ``sensor`` samples holding ``quantity`` (None if there is none):
    ``{sensor}/{quantity}`` if present, else the sensor's entry when it holds that quantity or does not say."""
    if quantity is not None and f"{sensor}/{quantity}" in statistics:
        return statistics[f"{sensor}/{quantity}"]
    entry = statistics.get(sensor)
    if entry is None or quantity is None or entry.get("quantity") in (None, quantity):
        return entry
    return None


def pixels_checksum(pixels: bytes) -> str:
    """The per-sample checksum ``meta.json`` records as ``pixels_crc32``.

    CRC-32 rather than a cryptographic hash: it exists to catch storage and transfer damage (it
    detects every burst of up to 32 flipped bits), runs at over 20 GB/s in the loader's hot path (ISA-L),
    and every shard still has a sha256 in the manifest for ``ofa manifest verify``."""
    return f"{crc32(pixels):08x}"


def check_pixels(pixels: bytes, meta: dict, key: str = "sample") -> None:
    """Raise ``ValueError`` if ``pixels`` (the pixels.npy bytes) do not match ``meta``'s ``pixels_crc32``."""
    if "pixels_crc32" not in meta:
        raise ValueError(f"{key}: meta.json has no pixels_crc32")
    expected, actual = meta["pixels_crc32"], pixels_checksum(pixels)
    if actual != expected:
        raise ValueError(f"{key}: pixels.npy CRC-32 {actual} does not match meta.json's {str(expected)[:12]} (damaged)")


def sample_key(item_id: str, row_off: int, col_off: int) -> str:
    """Deterministic, dot-free sample key for a chip of an item."""
    safe = "".join(c if (c.isalnum() or c in "-_") else "-" for c in item_id)
    return f"{safe}_r{row_off:06d}_c{col_off:06d}"


def shard_path(sensor: str, index: int) -> str:
    """Relative path of a numbered shard inside a dataset (the samples items leave over, packed in item order)."""
    return f"{SHARD_DIR}/{sensor}/{sensor}-{index:06d}.tar"


def item_shard_path(sensor: str, item_key: str, index: int) -> str:
    """Relative path of the ``index``-th full shard of one item's samples, written by the worker that read it."""
    return f"{SHARD_DIR}/{sensor}/items/{item_key}-{index:04d}.tar"
