"""Sample decoding: a raw sample's checked pixels and meta -> a normalised tensor, or native-dtype pixels
plus the per-band constants ``augment.prepare`` applies on the device."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from ofa.ingest.dataset.contract import META_EXT, PIXELS_EXT, check_pixels
from ofa.pipeline.data.normalise import normalise
from ofa.pipeline.data.npy import read_npy
from ofa.pipeline.data.streams import Stream, band_valid, sample_stats


def read_sample(sample: dict) -> tuple[np.ndarray, dict]:
    """Pixels and meta of a sample, after checking the pixels against the checksum its meta records."""
    meta = json.loads(sample[META_EXT])
    if "pixels_crc32" in meta:  # datasets written before the per-sample checksum carry none
        check_pixels(sample[PIXELS_EXT], meta, sample.get("__key__", "sample"))
    return read_npy(sample[PIXELS_EXT]), meta


def load(sample: dict, stream: Stream) -> tuple[np.ndarray, dict]:
    """``read_sample``, checking the pixels are [C, H, W] with the stream's band count."""
    raw, meta = read_sample(sample)
    if raw.ndim != 3 or raw.shape[0] != len(stream.bands):
        raise ValueError(f"pixels shape {raw.shape}, expected ({len(stream.bands)}, H, W)")
    return raw, meta


def decode(sample: dict, stream: Stream) -> torch.Tensor:
    """Raw sample -> float32 [C, H, W]: scale/offset, per-band normalisation, nodata -> 0."""
    raw, meta = load(sample, stream)
    return torch.from_numpy(normalise(raw, meta, stream))


def decode_raw(sample: dict, stream: Stream) -> tuple[np.ndarray, list[list[float]]]:
    """Raw sample -> (native-dtype pixels [C, H, W], [scale, offset, nodata, has_nodata, mean, std, valid] per
    band); an invalid band gets scale 0, offset 0, mean 0 and std 1, so it normalises to 0."""
    raw, meta = load(sample, stream)
    c = len(stream.bands)

    def per_band(value: Any, default: float | None) -> list:
        if value is None or isinstance(value, (int, float)):
            return [default if value is None else value] * c
        if len(value) != c:
            raise ValueError(f"meta has {len(value)} per-band values for {c} bands")
        return [default if v is None else v for v in value]

    nodata = per_band(meta.get("nodata"), None)
    valid = band_valid(meta, c)
    mean, std = sample_stats(meta, stream)
    consts = [
        [float(v) if ok else 0.0 for v, ok in zip(per_band(meta.get("scale"), 1.0), valid)],
        [float(v) if ok else 0.0 for v, ok in zip(per_band(meta.get("offset"), 0.0), valid)],
        [0.0 if v is None else float(v) for v in nodata],
        [0.0 if v is None else 1.0 for v in nodata],
        [float(v) if ok else 0.0 for v, ok in zip(mean, valid)],
        [float(v) if ok else 1.0 for v, ok in zip(std, valid)],
        [1.0 if ok else 0.0 for ok in valid],
    ]
    return raw, consts
