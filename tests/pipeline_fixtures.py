"""Tiny WebDataset datasets written per ``ingest.dataset.contract`` for the pipeline tests (no ingest needed)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from ofa.ingest.dataset.contract import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, pixels_checksum, shard_path
from ofa.ingest.sensors import SENSORS as REGISTRY
from ofa.ingest.storage import get_fs, join


def _sensor(sensor: str, dtype: str, scale: float, offset: float, nodata: float | None) -> tuple:
    spec = REGISTRY[sensor]
    return spec.band_names, spec.wavelengths, dtype, scale, offset, nodata


#: sensor -> (bands, wavelengths, dtype, scale, offset, nodata): the registry's bands, and pixel
#: encodings of the tests' own (an offset, float SAR without nodata, 8-bit aerial)
SENSORS: dict[str, tuple[list[str], list[float], str, float, float, float | None]] = {
    "sentinel-2": _sensor("sentinel-2", "uint16", 1e-4, -0.1, 0),
    "sentinel-1": _sensor("sentinel-1", "float32", 1.0, 0.0, None),
    "naip": _sensor("naip", "uint8", 1.0, 0.0, None),
}


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def make_pixels(sensor: str, size: int, rng: np.random.Generator, index: int) -> np.ndarray:
    """Pixels whose raw level encodes the sample index (band b of sample i ~ 100 * (i + 1) + b)."""
    bands, _, dtype, _, _, nodata = SENSORS[sensor]
    base = (np.arange(len(bands), dtype=np.float64)[:, None, None] + 100.0 * (index % 50 + 1))
    x = base + rng.uniform(0, 20, size=(len(bands), size, size))
    if dtype == "uint8":
        x = x % 250 + 1
    if nodata is not None:
        x[:, :2, :2] = nodata  # a nodata corner
    return x.astype(dtype)


def write_dataset(url: str, sensors: dict[str, tuple[int, int]], size: int = 48, seed: int = 0,
                  storage_options: dict[str, Any] | None = None) -> dict:
    """Write a dataset at ``url``: ``sensors`` maps sensor -> (shards, samples per shard). Returns the manifest."""
    fs, root = get_fs(url, storage_options)
    rng = np.random.default_rng(seed)
    shards, stats = [], {}
    for sensor, (n_shards, per_shard) in sensors.items():
        bands, wl, dtype, scale, offset, nodata = SENSORS[sensor]
        values = []
        for s in range(n_shards):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for i in range(per_shard):
                    index = s * per_shard + i
                    px = make_pixels(sensor, size, rng, index)
                    key = f"{sensor}-s{s:03d}-i{index:05d}"
                    npy = io.BytesIO()
                    np.save(npy, px)
                    meta = {"sensor": sensor, "bands": bands, "wavelengths": wl, "gsd": 10.0, "dtype": dtype,
                            "nodata": [nodata] * len(bands), "scale": [scale] * len(bands), "offset": [offset] * len(bands),
                            "item_id": key, "index": index,
                            "pixels_crc32": pixels_checksum(npy.getvalue())}
                    _tar_add(tar, f"{key}.pixels.npy", npy.getvalue())
                    _tar_add(tar, f"{key}.meta.json", json.dumps(meta).encode())
                    phys = px.astype(np.float64) * scale + offset
                    valid = px != nodata if nodata is not None else np.ones_like(px, bool)
                    values.append(np.where(valid, phys, np.nan).reshape(len(bands), -1))
            data = buf.getvalue()
            rel = shard_path(sensor, s)
            fs.makedirs(join(root, rel.rsplit("/", 1)[0]), exist_ok=True)
            with fs.open(join(root, rel), "wb") as f:
                f.write(data)
            shards.append({"path": rel, "sensor": sensor, "count": per_shard, "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()})
        allv = np.concatenate(values, axis=1)
        stats[sensor] = {"bands": bands, "count": int(np.isfinite(allv[0]).sum()),
                         "mean": np.nanmean(allv, axis=1).tolist(), "std": np.nanstd(allv, axis=1).tolist(),
                         "min": np.nanmin(allv, axis=1).tolist(), "max": np.nanmax(allv, axis=1).tolist()}
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created": "2026-01-01T00:00:00Z",
                "software": {}, "catalog": None, "search": {}, "items": [], "chips": {"chip_size": size},
                "shards": shards, "statistics": stats, "skipped": [], "counts": {"kept": sum(s["count"] for s in shards)}}
    with fs.open(join(root, MANIFEST_NAME), "wb") as f:
        f.write(json.dumps(manifest, indent=1).encode())
    return manifest


def train_env() -> dict[str, str]:
    """The environment of a training subprocess whose losses are compared: one CPU thread per process."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def logged_losses(out: Path, world_size: int | None = None) -> dict[int, float]:
    """step -> loss from a run's ``log.jsonl``; no step logged twice, and every line from ``world_size``
    processes when given."""
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in recs]
    assert len(steps) == len(set(steps)), f"duplicate steps in the log: {steps}"
    if world_size is not None:
        assert {r["world_size"] for r in recs} == {world_size}
    return {r["step"]: r["loss"] for r in recs if "loss" in r}
