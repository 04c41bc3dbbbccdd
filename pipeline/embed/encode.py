"""Samples -> embeddings: the checkpoint's encoder, no masking, one pooled vector per sample.

Each sample is decoded and normalised exactly as the training loader does it (``pipeline.data.decode``:
the manifest's per-band statistics, scale/offset, nodata -> 0), then the whole chip is resized to the
model's ``img_size`` the way training resizes its crops. Batches hold one sensor and depend only on
the region and ``batch_size``, so the same command gives the same bits on CPU.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd  # xarray's own dependency
import torch

from ofa.pipeline.data import Stream, decode
from ofa.pipeline.errors import InputError
from ofa.pipeline.evaluate.bands import resize

from .footprint import footprints

POOLS = ("mean", "cls")


class FitError(InputError):
    """A checkpoint that cannot embed a dataset (a sensor it has no embedding for, another band count)."""


def check_fit(config: Any, streams: list[Stream], checkpoint: str) -> None:
    """Refuse, in one line naming both, a checkpoint whose sensors or band counts do not fit the data."""
    known = config.modalities if config.embedding == "ofa" else {k: len(v) for k, v in (config.wavelengths or {}).items()}
    have = ", ".join(f"{k} ({v} bands)" for k, v in sorted(known.items())) or "none"
    for s in streams:
        if s.sensor not in known:
            raise FitError(f"checkpoint {checkpoint} does not fit dataset {s.dataset}: the dataset has {s.sensor} "
                           f"({len(s.bands)} bands), the checkpoint has no {s.sensor} embedding (it has {have})")
        if known[s.sensor] != len(s.bands):
            raise FitError(f"checkpoint {checkpoint} does not fit dataset {s.dataset}: the dataset's {s.sensor} has "
                           f"{len(s.bands)} bands, the checkpoint's {s.sensor} embedding takes {known[s.sensor]}")


@dataclass
class Columns:
    """What one region writes: one entry per sample, in plan order."""

    embedding: np.ndarray                 # [n, D] float32
    sample: list[str] = field(default_factory=list)
    item_id: list[str] = field(default_factory=list)
    collection: list[str] = field(default_factory=list)
    sensor: list[str] = field(default_factory=list)
    dataset: list[str] = field(default_factory=list)
    datetime: np.ndarray | None = None    # [n] datetime64[ns]
    bbox: np.ndarray | None = None        # [n, 4] WGS84 west, south, east, north (NaN if unknown)
    crs: list[str] = field(default_factory=list)
    transform: np.ndarray | None = None   # [n, 6] rasterio order (NaN if unknown)
    footprint: np.ndarray | None = None   # [n, 5, 2] closed WGS84 ring (NaN if unknown)

    def __len__(self) -> int:
        return len(self.sample)


def _datetime(value: Any) -> np.datetime64:
    """An ISO 8601 string (any offset) as UTC datetime64[ns]; NaT if missing or unreadable."""
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return np.datetime64("NaT", "ns")
    if stamp is pd.NaT:
        return np.datetime64("NaT", "ns")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_datetime64().astype("datetime64[ns]")


def _numbers(value: Any, n: int) -> list[float]:
    """``value`` as ``n`` floats, NaN where missing or of another length."""
    if isinstance(value, (list, tuple)) and len(value) == n and all(isinstance(v, (int, float)) for v in value):
        return [float(v) for v in value]
    return [float("nan")] * n


class Encoder:
    """The model's encoder on one device, with the pooling and input size of the job."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str, pool: str = "mean") -> None:
        if pool not in POOLS:
            raise ValueError(f"--pool {pool}: expected one of {list(POOLS)}")
        if pool == "cls":
            raise ValueError("--pool cls: OFA-Net's encoder has no class token (the MAE encodes patch tokens "
                             "only); use --pool mean")
        self.model, self.device, self.pool = model.eval().to(device), torch.device(device), pool
        self.config = model.config
        self.dim = self.config.embed_dim

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sensor: str) -> np.ndarray:
        """Pooled embeddings [N, D] float32 of a single-sensor batch [N, C, S, S]."""
        _, pooled = self.model.encode(x.to(self.device), modality=sensor)
        return pooled.float().cpu().numpy()

    def prepare(self, sample: dict, stream: Stream) -> tuple[torch.Tensor, dict]:
        """A raw sample -> (model input [C, S, S], its meta), normalised as in training."""
        key = sample.get("__key__")
        try:
            x = decode(sample, stream)
            meta = json.loads(sample["meta.json"])
        except Exception as exc:  # noqa: BLE001 - any decode failure is a damaged sample
            raise InputError(f"sample {key} of {sample.get('__url__')} is damaged: {type(exc).__name__}: {exc}") from None
        meta["_shape"] = tuple(x.shape[-2:])
        return resize(x[None], self.config.img_size)[0], meta


def _batches(items: Iterable[tuple[Stream, dict]], size: int) -> Iterator[tuple[Stream, list[dict]]]:
    """Consecutive samples of one stream, at most ``size`` at a time."""
    stream, batch = None, []
    for s, sample in items:
        if batch and (s is not stream or len(batch) == size):
            yield stream, batch
            batch = []
        stream = s
        batch.append(sample)
    if batch:
        yield stream, batch


def encode_region(encoder: Encoder, samples: Iterable[tuple[Stream, dict]], batch_size: int,
                  progress: Any = None) -> Columns:
    """Embed every sample of a region (an iterator of ``(stream, raw sample)``) into ``Columns``."""
    vectors, metas, sensors, datasets, keys = [], [], [], [], []
    for stream, raw in _batches(samples, batch_size):
        xs = [encoder.prepare(sample, stream) for sample in raw]
        vectors.append(encoder(torch.stack([x for x, _ in xs]), stream.sensor))
        metas += [m for _, m in xs]
        sensors += [stream.sensor] * len(raw)
        datasets += [stream.dataset] * len(raw)
        keys += [str(sample["__key__"]) for sample in raw]
        if progress is not None:
            progress.update(len(raw))
    cols = Columns(embedding=np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), np.float32),
                   sample=keys, sensor=sensors, dataset=datasets)
    cols.item_id = [str(m.get("item_id") or "") for m in metas]
    cols.collection = [str(m.get("collection") or "") for m in metas]
    cols.crs = [str(m.get("crs") or "") for m in metas]
    cols.datetime = np.array([_datetime(m.get("datetime")) for m in metas], dtype="datetime64[ns]")
    cols.bbox = np.array([_numbers(m.get("bbox"), 4) for m in metas], dtype=np.float64).reshape(-1, 4)
    cols.transform = np.array([_numbers(m.get("transform"), 6) for m in metas], dtype=np.float64).reshape(-1, 6)
    cols.footprint = footprints(cols.crs, cols.transform, [m["_shape"] for m in metas], cols.bbox)
    return cols
