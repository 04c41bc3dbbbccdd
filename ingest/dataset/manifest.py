"""Read, write, verify and summarise a dataset's ``manifest.json``; turn merged band sums into its statistics.

A run reads each manifest once (``load_manifest``) and hands the ``Manifest`` (content and the sha256 of
its bytes) to whatever needs it: the loader's streams, a checkpoint's provenance, an embedding store's
fingerprint, the shard check."""
from __future__ import annotations

import hashlib
import json
import math
import tarfile
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from ofa.ingest.dataset.contract import MANIFEST_NAME, ManifestError, parse_manifest
from ofa.ingest.dataset.shard_reader import count_samples
from ofa.ingest.dataset.shard_writer import write_atomic
from ofa.ingest.storage import get_fs, join


def manifest_url(url: str) -> str:
    """Accept a dataset URL or the URL of its manifest.json."""
    return url if url.rstrip("/").endswith(MANIFEST_NAME) else join(url, MANIFEST_NAME)


def dataset_url(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len(MANIFEST_NAME) - 1] if url.endswith("/" + MANIFEST_NAME) else url


@dataclass(frozen=True)
class Manifest:
    """A dataset's manifest as read once: the URL it was asked for (as given), its content, the sha256 of its bytes."""

    url: str
    data: dict
    sha256: str

    @property
    def root(self) -> str:
        """The dataset's URL (``url`` without a trailing ``/manifest.json``)."""
        return dataset_url(self.url)


def load_manifest(url: str, storage_options: dict | None = None) -> Manifest:
    """Read and validate the manifest of the dataset at ``url`` (or the manifest URL itself): one read."""
    murl = manifest_url(url)
    fs, path = get_fs(murl, storage_options)
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError:
        raise ManifestError(f"{murl}: no manifest (not a dataset, or an unfinished one)") from None
    return Manifest(url, parse_manifest(raw, murl), hashlib.sha256(raw).hexdigest())


def read_manifest(url: str, storage_options: dict | None = None) -> dict:
    """Load and validate the manifest of the dataset at ``url`` (or the manifest URL itself)."""
    return load_manifest(url, storage_options).data


def write_manifest(fs, root: str, manifest: dict) -> None:
    """Publish ``manifest`` as ``root``'s manifest.json (atomically): from then on the dataset is complete."""
    write_atomic(fs, f"{root}/{MANIFEST_NAME}", json.dumps(manifest, indent=1, sort_keys=True).encode())


class BandSums(Protocol):
    """Merged partial sums of one band (``ingest.chips.BandStats``)."""

    count: int
    total: float
    total_sq: float
    min: float
    max: float


def finalize_stats(bands: list[str], stats: Sequence[BandSums]) -> dict[str, Any]:
    """Per-band count, mean, std, min, max from merged partial sums."""
    out: dict[str, Any] = {"bands": list(bands), "count": [], "mean": [], "std": [], "min": [], "max": []}
    for s in stats:
        mean = s.total / s.count if s.count else None
        var = max(s.total_sq / s.count - mean * mean, 0.0) if s.count else None
        out["count"].append(s.count)
        out["mean"].append(None if mean is None else round(mean, 9))
        out["std"].append(None if var is None else round(math.sqrt(var), 9))
        out["min"].append(None if not s.count else round(s.min, 9))
        out["max"].append(None if not s.count else round(s.max, 9))
    return out


def verify_shards(url: str, manifest: dict, storage_options: dict | None = None) -> list[str]:
    """Problems with the shards ``manifest`` lists in the dataset at ``url``: each must be present with its size,
    sha256 and sample count (none: the dataset is as its manifest says)."""
    fs, base = get_fs(dataset_url(url), storage_options)
    problems: list[str] = []
    for shard in manifest.get("shards", []):
        path = f"{base.rstrip('/')}/{shard['path']}"
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            problems.append(f"{shard['path']}: missing")
            continue
        if len(data) != shard.get("bytes"):
            problems.append(f"{shard['path']}: {len(data)} bytes, manifest says {shard.get('bytes')}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != shard.get("sha256"):
            problems.append(f"{shard['path']}: sha256 {digest[:12]}..., manifest says {str(shard.get('sha256'))[:12]}...")
            continue
        try:
            pixels, meta = count_samples(data, path)
        except tarfile.TarError as exc:
            problems.append(f"{shard['path']}: not a readable tar ({exc})")
            continue
        if pixels != shard.get("count") or meta != shard.get("count"):
            problems.append(f"{shard['path']}: {pixels} samples, manifest says {shard.get('count')}")
    return problems


def verify_dataset(url: str, storage_options: dict | None = None) -> tuple[bool, list[str]]:
    """Read the manifest and check every shard it lists (``verify_shards``); a bad manifest is the one problem."""
    try:
        manifest = read_manifest(url, storage_options)
    except ManifestError as exc:
        return False, [str(exc)]
    problems = verify_shards(url, manifest, storage_options)
    return not problems, problems


def summary(manifest: dict) -> str:
    """A human-readable summary of a manifest."""
    lines = [
        f"format      {manifest.get('format')} v{manifest.get('format_version')}  (created {manifest.get('created')})",
        f"software    {', '.join(f'{k} {v}' for k, v in (manifest.get('software') or {}).items())}",
        f"catalog     {manifest.get('catalog')}",
        f"search      {manifest.get('search')}",
        f"chips       {manifest.get('chips')}",
        f"items       {len(manifest.get('items', []))} selected, {len(manifest.get('skipped', []))} skipped",
    ]
    counts = manifest.get("counts") or {}
    dropped = counts.get("dropped") or {}
    lines.append(f"samples     {counts.get('kept', 0)} kept; dropped " + (", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"))
    by_sensor: dict[str, list[int]] = {}
    for shard in manifest.get("shards", []):
        entry = by_sensor.setdefault(shard["sensor"], [0, 0, 0])
        entry[0] += 1
        entry[1] += shard["count"]
        entry[2] += shard["bytes"]
    lines.append("shards")
    for sensor, (n, count, size) in sorted(by_sensor.items()):
        lines.append(f"  {sensor:12s} {n:4d} shards {count:7d} samples {size / 2**20:9.1f} MiB")
    lines.append("statistics (after scale/offset, valid pixels)")
    for sensor, st in sorted((manifest.get("statistics") or {}).items()):
        lines.append(f"  {sensor}")
        for i, band in enumerate(st.get("bands", [])):
            mean, std = st["mean"][i], st["std"][i]
            lines.append(f"    {band:6s} mean {_fmt(mean)} std {_fmt(std)} min {_fmt(st['min'][i])} max {_fmt(st['max'][i])} n {st['count'][i]}")
    for skip in manifest.get("skipped", []):
        lines.append(f"skipped     {skip.get('item_id')} ({skip.get('collection')}): {skip.get('reason')}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "      n/a" if v is None else f"{v:9.4g}"
