"""What the loader reads: its configuration and one ``Stream`` per (dataset, sensor) from the manifests,
with the statistics of every quantity the sensor's samples hold."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ofa.ingest.dataset.contract import statistics_for
from ofa.ingest.dataset.manifest import Manifest, load_manifest
from ofa.ingest.storage import join


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
    #: the manifest's statistics entries of this sensor (its own and ``{sensor}/{quantity}`` ones; ``mean``/``std``
    #: above are the default one's); empty for streams made by hand
    statistics: dict = field(default_factory=dict, repr=False, compare=False)
    #: quantity -> (mean, std), filled by ``sample_stats``
    quantities: dict = field(default_factory=dict, repr=False, compare=False)


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
    return streams_from([load_manifest(url, storage_options) for url in data])


def streams_from(manifests: list[Manifest]) -> list[Stream]:
    """One Stream per (dataset, sensor) of manifests already read (``load_manifest``)."""
    if not manifests:
        raise ValueError("no dataset given: pass at least one --data URL")
    streams = []
    for m in manifests:
        url, manifest = m.url, m.data
        by_sensor: dict[str, list[dict]] = {}
        for shard in manifest["shards"]:
            by_sensor.setdefault(shard["sensor"], []).append(shard)
        for sensor, shards in sorted(by_sensor.items()):
            # the sensor's entry and its "{sensor}/{quantity}" ones (ingest.dataset.contract.statistics_key)
            entries = {k: v for k, v in manifest["statistics"].items() if k == sensor or k.startswith(f"{sensor}/")}
            if not entries:
                raise ValueError(f"{url}: manifest has shards but no statistics for sensor {sensor!r}")
            stats = entries.get(sensor) or entries[sorted(entries)[0]]
            mean, std = _mean_std(stats)
            streams.append(Stream(
                dataset=url, sensor=sensor, shards=[join(m.root, s["path"]) for s in shards],
                count=sum(int(s["count"]) for s in shards), bands=list(stats["bands"]), counts=[int(s["count"]) for s in shards],
                mean=mean, std=std, statistics=entries,
            ))
    if not streams:
        raise ValueError(f"no shards in {[m.url for m in manifests]}")
    return streams


def _mean_std(stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of a statistics entry (bands without statistics, count 0: 0 and 1)."""
    mean = np.asarray([0.0 if v is None else v for v in stats["mean"]], dtype=np.float32)
    std = np.asarray([1.0 if v is None else v for v in stats["std"]], dtype=np.float32)
    return mean, np.where(std > 0, std, 1.0).astype(np.float32)


def sample_stats(meta: dict, stream: Stream) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) a sample is normalised with: the entry ``statistics_for`` picks for its ``quantity``,
    never another quantity's (a sample whose quantity has none is refused)."""
    quantity = meta.get("quantity")
    hit = stream.quantities.get(quantity)
    if hit is not None:
        return hit
    if not stream.statistics:
        return stream.mean, stream.std
    entry = statistics_for(stream.statistics, stream.sensor, quantity)
    if entry is None:
        raise ValueError(f"no statistics for quantity {quantity!r} of sensor {stream.sensor!r} "
                         f"(the manifest has {', '.join(sorted(stream.statistics))})")
    hit = stream.quantities[quantity] = _mean_std(entry)
    return hit


def band_valid(meta: dict, channels: int) -> list[bool]:
    """A sample's per-band validity (meta.json ``band_valid``; all true when it has none)."""
    valid = meta.get("band_valid")
    if valid is None:
        return [True] * channels
    if len(valid) != channels:
        raise ValueError(f"band_valid has {len(valid)} values for {channels} bands")
    return [bool(v) for v in valid]


def modalities(streams: list[Stream]) -> dict[str, int]:
    """Sensor -> band count, for ``ModelConfig.modalities``; the same sensor must agree across datasets."""
    out: dict[str, int] = {}
    for s in streams:
        if out.setdefault(s.sensor, len(s.bands)) != len(s.bands):
            raise ValueError(f"{s.dataset}: sensor {s.sensor!r} has {len(s.bands)} bands, another dataset has {out[s.sensor]}")
    return out
