"""Normalisation: native-dtype pixels -> float32, with scale/offset, the manifest's per-band statistics of the
sample's quantity and nodata/non-finite values and invalid bands set to 0, as one fused affine whose
constants are cached per stream."""
from __future__ import annotations

from typing import Any

import numpy as np

from ofa.pipeline.data.streams import Stream, band_valid, sample_stats


def _frozen(value: Any) -> Any:
    """A meta value (number, None or list) as a hashable key."""
    return tuple(value) if isinstance(value, list) else value


def affine(meta: dict, stream: Stream, dtype: np.dtype) -> tuple:
    """``(a, b, nodata, has)`` for pixels of ``dtype``, cached per stream: ``x * a + b`` is scale/offset +
    normalisation ([C, 1, 1] float32); ``nodata`` [C, 1, 1] in ``dtype`` (float64 for float pixels) or None
    if no band has one; ``has`` [C, 1, 1] bool where only some bands have one, else None."""
    key = (dtype.str, *(_frozen(meta.get(k)) for k in ("scale", "offset", "nodata", "quantity", "band_valid")))
    hit = stream.consts.get(key)
    if hit is not None:
        return hit
    c = len(stream.bands)
    scale = np.asarray(meta.get("scale") or [1.0] * c, dtype=np.float32)
    offset = np.asarray(meta.get("offset") or [0.0] * c, dtype=np.float32)
    mean, std = sample_stats(meta, stream)
    valid = np.asarray(band_valid(meta, c), dtype=np.float32)   # invalid bands: x * 0 + 0
    a = (scale / std * valid).reshape(c, 1, 1)
    b = ((offset - mean) / std * valid).reshape(c, 1, 1)
    nd = has = None
    nodata = meta.get("nodata")
    if nodata is not None:
        nd = np.asarray([np.nan if v is None else v for v in (nodata if isinstance(nodata, list) else [nodata] * c)],
                        dtype=np.float64).reshape(c, 1, 1)
        has = np.isfinite(nd)
        if not has.any():
            nd = has = None
        else:
            if dtype.kind != "f":
                nd = np.where(has, nd, 0).astype(dtype)
            has = None if has.all() else has
    if len(stream.consts) >= 64:
        stream.consts.clear()
    stream.consts[key] = a, b, nd, has
    return a, b, nd, has


def normalise(raw: np.ndarray, meta: dict, stream: Stream) -> np.ndarray:
    """Native-dtype [C, h, w] (any view) -> contiguous float32: one fused affine, nodata/non-finite -> 0."""
    a, b, nd, has = affine(meta, stream, raw.dtype)
    x = raw.astype(np.float32)  # contiguous copy (flipped views come out flipped)
    x *= a
    x += b
    invalid = ~np.isfinite(x) if raw.dtype.kind == "f" else None
    if nd is not None:
        hit = raw == nd
        if has is not None:
            hit &= has
        invalid = hit if invalid is None else invalid | hit
    if invalid is not None and invalid.any():
        np.copyto(x, 0.0, where=invalid)
    return x
