"""What a checkpoint says about the data it was trained on, so that it can be used without the run.

``checkpoint_metadata`` builds the ``sensors`` and ``training`` sections of a checkpoint's
``config.json`` (``model.save_pretrained(..., metadata=...)``): per sensor the band names in
channel order and the per-band mean/std the loader normalised with (the dataset manifests),
wavelengths and GSD (the sensor registry ``ingest.sensors``, by band name), and the dtype,
scale/offset and no-data of the pixels as stored (the first sample's ``meta.json``: items may
override the registry's values, e.g. Sentinel-2's -0.1 offset since processing baseline 04.00;
the registry's values when no sample can be read). Per dataset: URL, manifest sha256, catalog,
collections and sample count. ``model/`` stays free of ``ingest``: it only reads the JSON.
"""
from __future__ import annotations

import logging
import tarfile
from typing import Any

import numpy as np

from ofa.ingest.dataset.manifest import Manifest
from ofa.ingest.dataset.shard_reader import first_meta
from ofa.ingest.sensors import SENSORS
from ofa.ingest.version import package_version

log = logging.getLogger("ofa.train")


def _num(v: float) -> float:
    """A float32 statistic as a short JSON number (7 significant digits)."""
    return float(f"{float(v):.7g}")


def sensor_facts(streams: list[Any], storage_options: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Per sensor: bands and mean/std (manifests), wavelengths (um) and gsd (m) (registry), dtype, scale,
    offset and nodata (the first sample, else the registry).

    A sensor found in several datasets gets the statistics pooled over them (weighted by sample count)."""
    out: dict[str, dict[str, Any]] = {}
    for sensor in sorted({s.sensor for s in streams}):
        mine = [s for s in streams if s.sensor == sensor]
        bands = list(mine[0].bands)
        weights = np.asarray([max(s.count, 1) for s in mine], dtype=np.float64)[:, None]
        means = np.stack([s.mean for s in mine]).astype(np.float64)
        variances = np.stack([s.std for s in mine]).astype(np.float64) ** 2
        mean = (weights * means).sum(0) / weights.sum()
        std = np.sqrt(np.maximum((weights * (variances + means**2)).sum(0) / weights.sum() - mean**2, 0.0))
        spec = SENSORS.get(sensor)
        known = {b.name: b for b in spec.bands} if spec else {}
        registry = [known.get(name) for name in bands]
        stored = _stored(mine[0], storage_options) or {
            "dtype": None, "quantity": None, "scale": [b.scale if b else 1.0 for b in registry],
            "offset": [b.offset if b else 0.0 for b in registry], "nodata": [b.nodata if b else None for b in registry]}
        out[sensor] = {
            "bands": bands,
            "wavelengths": [b.wavelength if b else None for b in registry],
            "gsd": [b.gsd if b else None for b in registry],
            **stored,
            "quantity": (mine[0].statistics.get(sensor) or {}).get("quantity") or stored.get("quantity"),
            "mean": [_num(v) for v in mean],
            "std": [_num(v) for v in std],
            "normalisation": "(raw * scale + offset - mean) / std per band; nodata -> 0",
        }
        other = _other_quantities(mine, sensor)
        if other:
            out[sensor]["by_quantity"] = other
    return out


def _other_quantities(streams: list[Any], sensor: str) -> dict[str, dict[str, list[float]]]:
    """mean/std of the quantities a sensor's manifests keep apart (``{sensor}/{quantity}`` entries)."""
    found: dict[str, dict[str, list[float]]] = {}
    for stream in streams:
        for key, entry in sorted(stream.statistics.items()):
            if key.startswith(f"{sensor}/") and key.split("/", 1)[1] not in found:
                found[key.split("/", 1)[1]] = {k: [None if v is None else _num(v) for v in entry[k]] for k in ("mean", "std")}
    return found


def _stored(stream: Any, storage_options: dict[str, Any] | None) -> dict[str, Any] | None:
    """dtype, scale, offset and nodata per band as the stream's first sample stores them; None if unreadable."""
    c = len(stream.bands)

    def per_band(value: Any, default: Any) -> list:
        return list(value) if isinstance(value, list) else [default if value is None else value] * c

    try:
        meta = first_meta(stream.shards[0], storage_options) if stream.shards else None
    except (OSError, ValueError, tarfile.TarError) as exc:
        log.warning("%s: cannot read a sample's meta.json for the checkpoint's sensor facts (%s)", stream.dataset, exc)
        return None
    if not meta:
        return None
    return {"dtype": meta.get("dtype"), "quantity": meta.get("quantity"), "scale": per_band(meta.get("scale"), 1.0),
            "offset": per_band(meta.get("offset"), 0.0), "nodata": per_band(meta.get("nodata"), None)}


def dataset_records(manifests: list[Manifest]) -> list[dict[str, Any]]:
    """Per dataset: its URL, the sha256 of its manifest.json, its catalog, collections, sensors and sample count."""
    records = []
    for m in manifests:
        manifest = m.data
        records.append({
            "url": m.url, "manifest_sha256": m.sha256,
            "catalog": manifest.get("catalog"), "collections": (manifest.get("search") or {}).get("collections"),
            "sensors": sorted({s["sensor"] for s in manifest.get("shards", [])}),
            "samples": sum(int(s.get("count", 0)) for s in manifest.get("shards", [])),
        })
    return records


def checkpoint_metadata(streams: list[Any], manifests: list[Manifest], options: dict[str, Any],
                        storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``sensors`` and ``training`` sections of a training checkpoint's config.json (``manifests``: the
    training data's, as read for ``streams``)."""
    return {"sensors": sensor_facts(streams, storage_options),
            "training": {"data": dataset_records(manifests), "options": options,
                         "software": {"ofa": package_version()}}}
