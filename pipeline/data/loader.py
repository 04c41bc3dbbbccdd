"""``ShardBatches``: infinite single-sensor batches for one rank, and the DataLoader around it."""
from __future__ import annotations

import itertools
import random
from typing import Any, Iterator

import numpy as np
import torch

from ofa.pipeline import augment
from ofa.pipeline.data.crops import decode_crop_valid
from ofa.pipeline.data.decode import decode_raw
from ofa.pipeline.data.device import raw_batch
from ofa.pipeline.data.sampling import Shuffle, fast_forward, seed_of
from ofa.pipeline.data.shared import SharedBatch
from ofa.pipeline.data.streams import LoaderConfig, Stream, read_streams
from ofa.ingest.dataset.shard_reader import Counter


class _CropFill:
    """Worker augmentation: each sample decoded, cropped and normalised into a float32 batch."""

    def __init__(self, cfg: LoaderConfig, stream: Stream, aug: random.Random, shared: bool) -> None:
        self.cfg, self.stream, self.aug = cfg, stream, aug
        self.out = SharedBatch((cfg.batch_size, len(stream.bands), cfg.img_size, cfg.img_size), shared)
        self.valid = torch.ones(cfg.batch_size, len(stream.bands), dtype=torch.bool)

    def add(self, i: int, sample: dict) -> None:
        cfg = self.cfg
        x, valid = decode_crop_valid(sample, self.stream, self.aug, cfg.img_size, (cfg.min_scale, cfg.max_scale))
        self.out[i] = x
        self.valid[i] = torch.tensor(valid)

    def fields(self) -> dict:
        return {"pixels": self.out.tensor, "valid": self.valid}


class _RawFill:
    """``device_augment``: native-dtype pixels, their per-band constants and drawn crop parameters."""

    def __init__(self, cfg: LoaderConfig, stream: Stream, aug: random.Random) -> None:
        self.cfg, self.stream, self.aug = cfg, stream, aug
        self.raws: list[np.ndarray] = []
        self.consts: list[list[list[float]]] = []
        self.params: list[list[float]] = []

    def add(self, i: int, sample: dict) -> None:
        raw, const = decode_raw(sample, self.stream)
        if self.raws and (raw.shape != self.raws[0].shape or raw.dtype != self.raws[0].dtype):
            raise ValueError(f"pixels {raw.dtype} {raw.shape} in a batch of {self.raws[0].dtype} {self.raws[0].shape}")
        self.raws.append(raw)
        self.consts.append(const)
        self.params.append(augment.crop_params(self.aug, raw.shape[1], raw.shape[2], (self.cfg.min_scale, self.cfg.max_scale)))

    def fields(self) -> dict:
        return raw_batch(self.raws, self.consts, self.params, self.stream)


class ShardBatches(torch.utils.data.IterableDataset):
    """Infinite single-sensor batches ``{"pixels", "valid", "sensor", "index", "skipped", "keys"}`` for one rank
    (``valid`` [N, C]: the bands each sample has; invalid ones are 0)."""

    def __init__(self, cfg: LoaderConfig, streams: list[Stream] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.streams = streams if streams is not None else read_streams(cfg.data, cfg.storage_options)
        dw = cfg.dataset_weights or [1.0] * len(cfg.data)
        if len(dw) != len(cfg.data):
            raise ValueError(f"dataset_weights has {len(dw)} values for {len(cfg.data)} datasets")
        ds_w = dict(zip(cfg.data, dw))
        weights = []
        for s in self.streams:
            w = (cfg.weights or {}).get(s.sensor, None)
            weights.append(ds_w.get(s.dataset, 1.0) * (float(s.count) if w is None else float(w)))
        if sum(weights) <= 0:
            raise ValueError(f"mixing weights {cfg.weights} leave nothing to sample")
        self.weights = weights

    def sensor_of(self, index: int) -> int:
        """The stream batch ``index`` comes from: depends on the index only, so every rank trains the same
        sensor per step."""
        return random.Random(seed_of(self.cfg.seed, "sensor", index)).choices(range(len(self.streams)), self.weights)[0]

    def _shuffles(self, worker: int, workers: int, counter: Counter) -> list[Shuffle]:
        """Each stream's shuffled samples for this worker. Batch i of this rank comes from worker
        i % workers (DataLoader round-robin); on resume, each stream skips the samples this worker's
        first batches took, without reading them."""
        cfg = self.cfg
        slots, slot = cfg.world_size * workers, cfg.rank * workers + worker
        taken = [0] * len(self.streams)
        for index in range(worker, cfg.skip_batches, workers):
            taken[self.sensor_of(index)] += cfg.batch_size
        return [fast_forward(s, slot, slots, cfg, counter, random.Random(seed_of(cfg.seed, "shuffle", cfg.rank, worker, k)), taken[k])
                for k, s in enumerate(self.streams)]

    def _batch(self, index: int, shuffle: Shuffle, stream: Stream, counter: Counter, shared: bool) -> dict:
        """Batch ``index``: ``batch_size`` samples from ``shuffle``; what damage takes is refilled from the
        same stream."""
        cfg = self.cfg
        picked = [next(shuffle) for _ in range(cfg.batch_size)]
        aug = random.Random(seed_of(cfg.seed, "augment", cfg.rank, index))
        fill: Any = _RawFill(cfg, stream, aug) if cfg.device_augment else _CropFill(cfg, stream, aug, shared)
        keys: list[str] = []
        pending = iter(picked)
        while len(keys) < cfg.batch_size:
            sample = next(pending, None) or next(shuffle)
            try:
                fill.add(len(keys), sample)
            except Exception as exc:  # noqa: BLE001 - a damaged sample must not stop training
                counter.bad(f"sample {sample.get('__key__')} of {sample.get('__url__')}", exc)
                continue
            keys.append(sample["__key__"])
        return {**fill.fields(), "sensor": stream.sensor, "index": index, "skipped": counter.skipped, "keys": keys}

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        counter = Counter()
        shuffled = self._shuffles(worker, workers, counter)
        for index in itertools.count(worker, workers):
            if index < self.cfg.skip_batches:  # keeps the DataLoader's round-robin aligned with batch indices on resume
                yield {"skip": True, "index": index}
                continue
            k = self.sensor_of(index)
            yield self._batch(index, shuffled[k], self.streams[k], counter, shared=info is not None)


def batches(loader: Iterator[dict] | torch.utils.data.DataLoader) -> Iterator[dict]:
    """Real batches of a loader in index order (drops the placeholders of skipped batches)."""
    for batch in loader:
        if not batch.get("skip"):
            yield batch


def make_loader(cfg: LoaderConfig, workers: int = 0, streams: list[Stream] | None = None,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over ``ShardBatches`` (already batched; ``batch_size=None``); pin memory for GPU copies."""
    dataset = ShardBatches(cfg, streams)
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, persistent_workers=False, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(cfg.seed), prefetch_factor=4 if workers else None,
    )
