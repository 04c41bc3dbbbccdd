"""What the loader reads: its configuration and one ``Stream`` per (dataset, sensor) from the manifests."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingest.contract import MANIFEST_NAME, parse_manifest
from ingest.storage import get_fs, join


@dataclass
class Stream:
    """One (dataset, sensor) source of samples."""

    dataset: str
    sensor: str
    shards: list[str]  # full URLs
    count: int
    mean: np.ndarray
    std: np.ndarray
    bands: list[str]
    #: samples per shard, from the manifest (lets a resumed loader skip without reading); None: unknown
    counts: list[int] | None = None
    #: per-band constants of each distinct (dtype, scale, offset, nodata) seen, filled by ``normalise.affine``
    consts: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass
class LoaderConfig:
    """What the loader reads and how it augments."""

    data: list[str]
    batch_size: int = 8
    img_size: int = 224
    seed: int = 0
    shuffle_buffer: int = 256
    min_scale: float = 0.2
    max_scale: float = 1.0
    resampled: bool = False
    weights: dict[str, float] | None = None  # sensor -> mixing weight (default: sample counts)
    dataset_weights: list[float] | None = None  # per dataset URL (default 1)
    storage_options: dict[str, Any] | None = None
    rank: int = 0
    world_size: int = 1
    skip_batches: int = 0  # batches of this rank already consumed (resume)
    device_augment: bool = False  # ship native-dtype pixels + crop parameters; ``to_device`` finishes on the GPU


def read_streams(data: list[str], storage_options: dict[str, Any] | None = None) -> list[Stream]:
    """Read each dataset's manifest into one Stream per sensor."""
    if not data:
        raise ValueError("no dataset given: pass at least one --data URL")
    streams = []
    for url in data:
        fs, root = get_fs(url, storage_options)
        path = join(root, MANIFEST_NAME)
        if not fs.exists(path):
            raise FileNotFoundError(f"{url}: no {MANIFEST_NAME} (is this an ofa dataset?)")
        with fs.open(path, "rb") as f:
            manifest = parse_manifest(f.read(), source=join(url, MANIFEST_NAME))
        by_sensor: dict[str, list[dict]] = {}
        for shard in manifest["shards"]:
            by_sensor.setdefault(shard["sensor"], []).append(shard)
        for sensor, shards in sorted(by_sensor.items()):
            stats = manifest["statistics"].get(sensor)
            if not stats:
                raise ValueError(f"{url}: manifest has shards but no statistics for sensor {sensor!r}")
            std = np.asarray(stats["std"], dtype=np.float32)
            streams.append(Stream(
                dataset=url, sensor=sensor, shards=[join(url, s["path"]) for s in shards],
                count=sum(int(s["count"]) for s in shards), bands=list(stats["bands"]), counts=[int(s["count"]) for s in shards],
                mean=np.asarray(stats["mean"], dtype=np.float32), std=np.where(std > 0, std, 1.0).astype(np.float32),
            ))
    if not streams:
        raise ValueError(f"no shards in {data}")
    return streams


def modalities(streams: list[Stream]) -> dict[str, int]:
    """Sensor -> band count, for ``ModelConfig.modalities``; the same sensor must agree across datasets."""
    out: dict[str, int] = {}
    for s in streams:
        if out.setdefault(s.sensor, len(s.bands)) != len(s.bands):
            raise ValueError(f"{s.dataset}: sensor {s.sensor!r} has {len(s.bands)} bands, another dataset has {out[s.sensor]}")
    return out
